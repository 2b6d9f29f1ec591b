-- Hallmark store, SQLite. Times are integer Unix seconds, serials lower-case hex text,
-- DER as BLOB, so that rows read the same on SQLite and PostgreSQL.

CREATE TABLE issuers (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('root', 'issuing')),
    subject     TEXT NOT NULL,
    cert_der    BLOB NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    -- 'active' signs; 'retired' only publishes CRLs until its last certificate expires.
    status      TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    zone           TEXT NOT NULL,
    lot            TEXT,
    profile        TEXT NOT NULL,
    model          TEXT,
    serial_number  TEXT,
    status         TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'decommissioned')),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX devices_zone ON devices (zone);
CREATE INDEX devices_lot ON devices (lot);

CREATE TABLE certificates (
    -- Issue order; the pagination cursor.
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    serial             TEXT NOT NULL UNIQUE,
    device_id          TEXT NOT NULL REFERENCES devices (id),
    profile            TEXT NOT NULL,
    zone               TEXT NOT NULL,
    issuer_id          TEXT NOT NULL REFERENCES issuers (id),
    subject            TEXT NOT NULL,
    not_before         INTEGER NOT NULL,
    not_after          INTEGER NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'suspended')),
    revoked_at         INTEGER,
    revocation_reason  INTEGER,
    -- JSON {"profiles": [...], "zones": [...]} for provisioner credentials.
    scope              TEXT,
    requested_by       TEXT NOT NULL,
    spki_sha256        TEXT NOT NULL,
    der                BLOB NOT NULL,
    issued_at          INTEGER NOT NULL
);
CREATE INDEX certificates_device ON certificates (device_id, seq);
CREATE INDEX certificates_profile ON certificates (profile, seq);
CREATE INDEX certificates_status ON certificates (status, seq);
CREATE INDEX certificates_issuer ON certificates (issuer_id, seq);

CREATE TABLE enrollment_tokens (
    hash        BLOB PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices (id),
    profile     TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    used_at     INTEGER
);

CREATE TABLE manufacturer_cas (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    cert_der       BLOB NOT NULL,
    zones          TEXT NOT NULL,
    profile        TEXT NOT NULL,
    auto_register  INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE crl_state (
    issuer_id   TEXT PRIMARY KEY REFERENCES issuers (id),
    crl_number  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Hash-chained: hash = SHA-256(prev_hash || canonical event); see audit.rs.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
