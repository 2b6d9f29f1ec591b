-- Enrollment: serial numbers identify devices presenting an IDevID; tokens can be revoked;
-- a manufacturer CA gives its devices one zone.

CREATE UNIQUE INDEX devices_serial_number ON devices (serial_number) WHERE serial_number IS NOT NULL;

ALTER TABLE enrollment_tokens ADD COLUMN revoked_at INTEGER;
CREATE INDEX enrollment_tokens_device ON enrollment_tokens (device_id);

ALTER TABLE manufacturer_cas RENAME COLUMN zones TO zone;
ALTER TABLE manufacturer_cas ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE manufacturer_cas ADD COLUMN not_after INTEGER NOT NULL DEFAULT 0;
