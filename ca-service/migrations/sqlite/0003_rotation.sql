-- Rotation: a renewed certificate points to its successor.
ALTER TABLE certificates ADD COLUMN superseded_by TEXT;
CREATE INDEX certificates_not_after ON certificates (not_after);
