-- A device's serial number is unique per manufacturer, not globally, and an IDevID enrollment
-- binds the device to the manufacturer whose certificate it presented.
ALTER TABLE devices ADD COLUMN manufacturer TEXT;
DROP INDEX devices_serial_number;
CREATE UNIQUE INDEX devices_manufacturer_serial
    ON devices (ifnull(manufacturer, ''), serial_number) WHERE serial_number IS NOT NULL;
