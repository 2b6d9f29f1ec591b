-- The CRL publisher's read of one issuer's entries (its revoked and held certificates), as
-- SQLite's 0009: only revoked and held rows are in it, so an issuance writes nothing more.
CREATE INDEX certificates_listed ON certificates (issuer_id, seq)
    WHERE status IN ('revoked', 'suspended');
