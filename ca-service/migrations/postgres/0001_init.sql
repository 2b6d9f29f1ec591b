-- Hallmark store, PostgreSQL: the schema the SQLite migrations 0001-0007 arrive at, in one
-- step (a PostgreSQL store starts at the current schema). Times are BIGINT Unix seconds,
-- serials lower-case hex text, DER as BYTEA, so rows read the same on both backends.

CREATE TABLE issuers (
    id                 TEXT PRIMARY KEY,
    kind               TEXT NOT NULL CHECK (kind IN ('root', 'issuing')),
    subject            TEXT NOT NULL,
    cert_der           BYTEA NOT NULL,
    not_before         BIGINT NOT NULL,
    not_after          BIGINT NOT NULL,
    -- 'active' signs; 'retired' only publishes CRLs until its last certificate expires.
    status             TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at         BIGINT NOT NULL,
    -- A revoked issuing CA signs nothing more and is listed on its root's CRL.
    revoked_at         BIGINT,
    revocation_reason  BIGINT
);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    zone           TEXT NOT NULL,
    lot            TEXT,
    profile        TEXT NOT NULL,
    model          TEXT,
    serial_number  TEXT,
    -- The manufacturer whose IDevID enrolled (or may enroll) the device.
    manufacturer   TEXT,
    status         TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'decommissioned')),
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    -- Lets a device whose certificates were revoked enroll by IDevID again.
    readmitted_at  BIGINT
);
CREATE INDEX devices_zone ON devices (zone);
CREATE INDEX devices_lot ON devices (lot);
-- A serial number is unique per manufacturer, not globally.
CREATE UNIQUE INDEX devices_manufacturer_serial
    ON devices (coalesce(manufacturer, ''), serial_number) WHERE serial_number IS NOT NULL;

CREATE TABLE certificates (
    -- Issue order; the pagination cursor.
    seq                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial                  TEXT NOT NULL UNIQUE,
    device_id               TEXT NOT NULL REFERENCES devices (id),
    profile                 TEXT NOT NULL,
    zone                    TEXT NOT NULL,
    issuer_id               TEXT NOT NULL REFERENCES issuers (id),
    subject                 TEXT NOT NULL,
    not_before              BIGINT NOT NULL,
    not_after               BIGINT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'suspended')),
    revoked_at              BIGINT,
    revocation_reason       BIGINT,
    -- JSON {"profiles": [...], "zones": [...]} for provisioner credentials.
    scope                   TEXT,
    requested_by            TEXT NOT NULL,
    spki_sha256             TEXT NOT NULL,
    der                     BYTEA NOT NULL,
    issued_at               BIGINT NOT NULL,
    -- A renewed certificate points to its successor.
    superseded_by           TEXT,
    -- A hold made by suspending the device in the registry (released with the device only).
    device_hold             BOOLEAN NOT NULL DEFAULT FALSE,
    -- When it first authenticated a call (a superseded certificate may renew again only while
    -- its successor has never been used).
    first_authenticated_at  BIGINT
);
CREATE INDEX certificates_device ON certificates (device_id, seq);
CREATE INDEX certificates_profile ON certificates (profile, seq);
CREATE INDEX certificates_status ON certificates (status, seq);
CREATE INDEX certificates_issuer ON certificates (issuer_id, seq);
CREATE INDEX certificates_not_after ON certificates (not_after);

-- No certificate of a revoked issuing CA is ever recorded, so none leaves the CA (on any
-- replica, whatever it has noticed of a revocation made elsewhere).
CREATE FUNCTION certificates_issuer_not_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT revoked_at FROM issuers WHERE id = NEW.issuer_id) IS NOT NULL THEN
        RAISE EXCEPTION 'hallmark: the issuing CA is revoked';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER certificates_issuer_not_revoked BEFORE INSERT ON certificates
    FOR EACH ROW EXECUTE FUNCTION certificates_issuer_not_revoked();

CREATE TABLE enrollment_tokens (
    hash        BYTEA PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices (id),
    profile     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    used_at     BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX enrollment_tokens_device ON enrollment_tokens (device_id);

CREATE TABLE manufacturer_cas (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    cert_der       BYTEA NOT NULL,
    zone           TEXT NOT NULL,
    profile        TEXT NOT NULL,
    auto_register  BOOLEAN NOT NULL,
    created_at     BIGINT NOT NULL,
    subject        TEXT NOT NULL DEFAULT '',
    not_after      BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE crl_state (
    issuer_id   TEXT PRIMARY KEY REFERENCES issuers (id),
    crl_number  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- The newest CRL of each root (a root without a row publishes no CRL).
CREATE TABLE root_crls (
    issuer_id    TEXT PRIMARY KEY REFERENCES issuers (id),
    crl_number   BIGINT NOT NULL,
    this_update  BIGINT NOT NULL,
    next_update  BIGINT NOT NULL,
    entries      BIGINT NOT NULL,
    der          BYTEA NOT NULL,
    signed_at    BIGINT NOT NULL,
    signed_by    TEXT NOT NULL
);

-- Hash-chained: hash = SHA-256(prev_hash || canonical event); see audit.rs.
CREATE TABLE audit_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);
