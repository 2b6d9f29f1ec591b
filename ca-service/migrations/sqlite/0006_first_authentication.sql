-- Key exposure: when a certificate first authenticated a call. A superseded certificate may
-- renew again (a device that crashed before saving its successor) only while the successor
-- has never been used.
ALTER TABLE certificates ADD COLUMN first_authenticated_at INTEGER;
