//! Lot manifests: which devices a production lot holds. CSV with the header
//! `device_id,zone,profile,model,serial_number` plus any target-specific columns, or the same as
//! JSON (an array of objects, or `{"devices": [...]}`). A manifest is checked whole before
//! anything is provisioned: a bad row stops the run with every problem listed by line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use hallmark_core::identity::validate_name;

/// Columns every manifest has.
pub const REQUIRED_COLUMNS: [&str; 5] = ["device_id", "zone", "profile", "model", "serial_number"];

/// One device of a lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Device id (the certificate's CN).
    pub device_id: String,
    /// Zone.
    pub zone: String,
    /// Profile.
    pub profile: String,
    /// Model (free text, may be empty).
    pub model: String,
    /// Manufacturer serial number (free text, may be empty).
    pub serial_number: String,
    /// Target-specific columns (e.g. `pkcs12_password`, `pkcs11_token`).
    pub extra: BTreeMap<String, String>,
    /// Line (CSV) or position (JSON, from 1) in the manifest, for messages.
    pub line: usize,
}

/// A lot: its id and its devices in manifest order.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The lot id recorded with every device.
    pub lot_id: String,
    /// The devices.
    pub devices: Vec<DeviceEntry>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("reading the manifest {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not CSV or JSON of the expected shape.
    #[error("the manifest {path} is not a lot manifest: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Rows with problems, each named by line.
    #[error("the manifest {path} has {} bad row(s); nothing was provisioned:\n{}", .problems.len(), .problems.join("\n"))]
    Rows {
        /// The file.
        path: String,
        /// `line N: problem` texts.
        problems: Vec<String>,
    },
    /// The lot id is not a valid name.
    #[error("lot id `{0}` is not a valid lot name ([a-z0-9][a-z0-9._-]{{0,63}}); give --lot-id")]
    LotId(String),
}

impl Manifest {
    /// Reads `path` (`.json` is JSON, anything else CSV). The lot is named `lot_id`, or after
    /// the file (its name without extension) when `None`.
    pub fn read(path: &Path, lot_id: Option<&str>) -> Result<Self, ManifestError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: shown.clone(),
            source,
        })?;
        let lot_id = match lot_id {
            Some(l) => l.to_owned(),
            None => path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned(),
        };
        validate_name("lot", &lot_id).map_err(|_| ManifestError::LotId(lot_id.clone()))?;
        let is_json = path.extension().is_some_and(|e| e == "json");
        let rows = if is_json {
            json_rows(&text)
        } else {
            csv_rows(&text)
        }
        .map_err(|reason| ManifestError::Format {
            path: shown.clone(),
            reason,
        })?;
        let devices = check_rows(rows).map_err(|problems| ManifestError::Rows {
            path: shown,
            problems,
        })?;
        Ok(Self { lot_id, devices })
    }
}

/// `(line, column → value)` per row.
type Rows = Vec<(usize, BTreeMap<String, String>)>;

fn csv_rows(text: &str) -> Result<Rows, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_owned)
        .collect();
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .filter(|c| !header.iter().any(|h| h == *c))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the header lacks {}; it must start with {}",
            missing.join(", "),
            REQUIRED_COLUMNS.join(",")
        ));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let row = header
            .iter()
            .cloned()
            .zip(record.iter().map(str::to_owned))
            .collect();
        rows.push((line, row));
    }
    Ok(rows)
}

fn json_rows(text: &str) -> Result<Rows, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let list = match &value {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o
            .get("devices")
            .and_then(|d| d.as_array())
            .ok_or("expected an array of devices or an object with `devices`")?,
        _ => return Err("expected an array of devices or an object with `devices`".into()),
    };
    let mut rows = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let obj = item
            .as_object()
            .ok_or_else(|| format!("device {} is not an object", i + 1))?;
        let mut row = BTreeMap::new();
        for (k, v) in obj {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            row.insert(k.clone(), text);
        }
        rows.push((i + 1, row));
    }
    Ok(rows)
}

fn check_rows(rows: Rows) -> Result<Vec<DeviceEntry>, Vec<String>> {
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut devices = Vec::new();
    for (line, mut row) in rows {
        let mut take = |c: &str| row.remove(c).unwrap_or_default();
        let entry = DeviceEntry {
            device_id: take("device_id"),
            zone: take("zone"),
            profile: take("profile"),
            model: take("model"),
            serial_number: take("serial_number"),
            extra: BTreeMap::new(),
            line,
        };
        let mut bad = Vec::new();
        for (kind, value) in [
            ("device id", &entry.device_id),
            ("zone", &entry.zone),
            ("profile", &entry.profile),
        ] {
            if let Err(e) = validate_name(kind, value) {
                bad.push(e.to_string());
            }
        }
        for (field, value) in [
            ("model", &entry.model),
            ("serial_number", &entry.serial_number),
        ] {
            if value.len() > 128 || value.chars().any(char::is_control) {
                bad.push(format!("{field} must be at most 128 printable characters"));
            }
        }
        if let Some(first) = seen.get(&entry.device_id) {
            bad.push(format!(
                "device id {} is already on line {first}",
                entry.device_id
            ));
        } else {
            seen.insert(entry.device_id.clone(), line);
        }
        if bad.is_empty() {
            devices.push(DeviceEntry {
                extra: row,
                ..entry
            });
        } else {
            problems.push(format!("line {line}: {}", bad.join("; ")));
        }
    }
    if problems.is_empty() {
        Ok(devices)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn csv_and_json_give_the_same_lot() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            dir.path(),
            "lot-7.csv",
            "device_id,zone,profile,model,serial_number,pkcs12_password\n\
             s-1,field,sensor,TX-1,SN1,secret-1\ns-2,field,sensor,,,\n",
        );
        let json = write(
            dir.path(),
            "lot-7.json",
            r#"{"devices":[{"device_id":"s-1","zone":"field","profile":"sensor","model":"TX-1",
                "serial_number":"SN1","pkcs12_password":"secret-1"},
               {"device_id":"s-2","zone":"field","profile":"sensor","model":"","serial_number":"","pkcs12_password":""}]}"#,
        );
        let a = Manifest::read(&csv, None).unwrap();
        let mut b = Manifest::read(&json, None).unwrap();
        assert_eq!(a.lot_id, "lot-7");
        for (d, line) in b.devices.iter_mut().zip([2, 3]) {
            d.line = line;
        }
        assert_eq!(a.devices, b.devices);
        assert_eq!(a.devices[0].extra["pkcs12_password"], "secret-1");
        assert_eq!(
            Manifest::read(&csv, Some("night-shift")).unwrap().lot_id,
            "night-shift"
        );
    }

    #[test]
    fn bad_rows_are_all_named_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "lot.csv",
            "device_id,zone,profile,model,serial_number\n\
             s-1,field,sensor,,\nBAD ID,field,sensor,,\ns-1,field,sensor,,\ns-3,,sensor,,\n",
        );
        let e = Manifest::read(&p, None).unwrap_err().to_string();
        assert!(e.contains("3 bad row(s)"), "{e}");
        assert!(
            e.contains("line 3:") && e.contains("line 4:") && e.contains("line 5:"),
            "{e}"
        );
        assert!(e.contains("already on line 2"), "{e}");
        let p = write(dir.path(), "nohdr.csv", "device_id,zone\ns-1,field\n");
        let e = Manifest::read(&p, None).unwrap_err().to_string();
        assert!(e.contains("lacks profile, model, serial_number"), "{e}");
        let p = write(
            dir.path(),
            "Lot A.csv",
            "device_id,zone,profile,model,serial_number\n",
        );
        assert!(matches!(
            Manifest::read(&p, None),
            Err(ManifestError::LotId(_))
        ));
    }
}
