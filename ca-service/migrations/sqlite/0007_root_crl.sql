-- The root's CRL (issue 11): an issuing CA can be revoked (`hallmark-ca issuer revoke`). A
-- revoked issuing CA is retired, leaves the trust bundle, signs nothing more, and is listed on
-- the CRL of the root that signed it.
ALTER TABLE issuers ADD COLUMN revoked_at INTEGER;
ALTER TABLE issuers ADD COLUMN revocation_reason INTEGER;

-- No certificate of a revoked issuing CA is ever recorded, so none leaves the CA (a serving CA
-- may take up to one poll to notice a rollover made by another process).
CREATE TRIGGER certificates_issuer_not_revoked BEFORE INSERT ON certificates
WHEN (SELECT revoked_at FROM issuers WHERE id = NEW.issuer_id) IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'hallmark: the issuing CA is revoked');
END;

-- The newest CRL of each root, signed wherever the root key is (the CA itself when the key is
-- in its data dir, else `hallmark-ca` commands given the key) and served by the CA. A root
-- without a row publishes no CRL (e.g. an imported corporate root).
CREATE TABLE root_crls (
    issuer_id    TEXT PRIMARY KEY REFERENCES issuers (id),
    crl_number   INTEGER NOT NULL,
    this_update  INTEGER NOT NULL,
    next_update  INTEGER NOT NULL,
    entries      INTEGER NOT NULL,
    der          BLOB NOT NULL,
    signed_at    INTEGER NOT NULL,
    signed_by    TEXT NOT NULL
);
