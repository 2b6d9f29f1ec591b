-- What replicas share (issue 13): the newest CRL of each issuing CA, built by one replica
-- for all of them, and a version of the certificate statuses, counting committed batches of
-- status changes, so that a replica knows whether a stored CRL holds every change (its basis).
-- An SQLite CA is one process: it keeps its CRLs in memory and leaves `issuing_crls` empty.
CREATE TABLE issuing_crls (
    issuer_id    TEXT PRIMARY KEY REFERENCES issuers (id),
    crl_number   INTEGER NOT NULL,
    basis        INTEGER NOT NULL,
    this_update  INTEGER NOT NULL,
    next_update  INTEGER NOT NULL,
    entries      INTEGER NOT NULL,
    der          BLOB NOT NULL,
    built_at     INTEGER NOT NULL
);

CREATE TABLE status_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
INSERT INTO status_version (id, version) VALUES (1, 0);

-- Failed enrollments per peer address within the current throttle window (service::throttle),
-- kept here so that the limit holds across replicas; windows that ended are pruned on write.
CREATE TABLE enroll_failures (
    peer          TEXT PRIMARY KEY,
    window_start  INTEGER NOT NULL,
    failures      INTEGER NOT NULL,
    reported      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX enroll_failures_window ON enroll_failures (window_start);
