-- Lifecycle follows the registry (issue 10): a hold made by suspending the device in the
-- registry is marked, so that resuming the device releases only those holds (and
-- `Revocation.Resume` only the others); a re-admission lets a device whose certificates were
-- revoked enroll by IDevID again.
ALTER TABLE certificates ADD COLUMN device_hold INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN readmitted_at INTEGER;
