-- CRLs shared by replicas: the newest CRL of each issuing CA, built by one replica for all of
-- them (under an advisory lock per issuer), and a version of the certificate statuses, counting
-- committed batches of status changes, so that a replica knows whether a stored CRL holds every
-- change (its basis). The same tables as SQLite's 0008.
CREATE TABLE issuing_crls (
    issuer_id    TEXT PRIMARY KEY REFERENCES issuers (id),
    crl_number   BIGINT NOT NULL,
    basis        BIGINT NOT NULL,
    this_update  BIGINT NOT NULL,
    next_update  BIGINT NOT NULL,
    entries      BIGINT NOT NULL,
    der          BYTEA NOT NULL,
    built_at     BIGINT NOT NULL
);

CREATE TABLE status_version (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    version  BIGINT NOT NULL
);
INSERT INTO status_version (id, version) VALUES (1, 0);

-- Failed enrollments per peer address within the current throttle window (service::throttle),
-- kept here so that the limit holds across replicas; windows that ended are pruned on write.
CREATE TABLE enroll_failures (
    peer          TEXT PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    failures      BIGINT NOT NULL,
    reported      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX enroll_failures_window ON enroll_failures (window_start);
