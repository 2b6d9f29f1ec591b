//! The lot journal: an append-only file of JSON lines, each synced to disk before the station
//! goes on, so that a lot survives a crash or a power cut. A run reads it first: finished
//! devices are skipped, a device whose certificate was issued but not yet confirmed at the
//! target is completed with that certificate when the target still holds its key, and
//! everything else is provisioned again (the CA revokes what a new issuance replaces, so a
//! device never ends with two active certificates).
//!
//! Only public material is journaled (serials, certificates); never a key or a password.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What is known of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeviceState {
    /// The CA issued this certificate; the target may not have it yet.
    Issued {
        /// Serial, hex.
        serial: String,
        /// Leaf + issuing CA, PEM.
        chain_pem: String,
        /// Trust bundle, PEM.
        trust_pem: String,
    },
    /// Injected, read back and verified.
    Done {
        /// Serial, hex.
        serial: String,
        /// Time the device took in this run, milliseconds.
        millis: u64,
    },
    /// This attempt failed (a later run tries again).
    Failed {
        /// Why.
        error: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Header {
    journal: String,
    lot: String,
}

#[derive(Serialize, Deserialize)]
struct Line {
    device: String,
    at: i64,
    #[serde(flatten)]
    state: DeviceState,
}

const MAGIC: &str = "hallmark-provisioner";

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// I/O.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a journal, or one of another lot.
    #[error("journal {path}: {reason}")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    states: HashMap<String, DeviceState>,
}

impl Journal {
    /// Opens (creating) the journal of lot `lot` at `path` and reads what it holds. A last line
    /// cut short by a crash is dropped.
    pub fn open(path: &Path, lot: &str) -> Result<Self, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let foreign = |reason: String| JournalError::Foreign {
            path: path.to_owned(),
            reason,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // Two runs of one lot at once would interleave their lines and both provision.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                foreign(
                    "another run of this lot is using it (the journal is locked); wait for it \
                     to end"
                        .into(),
                )
            },
        )?;
        let mut states = HashMap::new();
        let mut good_len = 0u64;
        let mut header_seen = false;
        {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io)?;
            let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
            for (i, raw) in lines.iter().enumerate() {
                let last = i + 1 == lines.len();
                if !raw.ends_with(b"\n") {
                    break; // a line cut short by a crash: dropped below
                }
                if !header_seen {
                    let h: Header = serde_json::from_slice(raw)
                        .ok()
                        .filter(|h: &Header| h.journal == MAGIC)
                        .ok_or_else(|| {
                            foreign(
                                "this file is not a provisioner journal; name another --journal"
                                    .into(),
                            )
                        })?;
                    if h.lot != lot {
                        return Err(foreign(format!(
                            "it belongs to lot `{}`, not `{lot}`; name another --journal",
                            h.lot
                        )));
                    }
                    header_seen = true;
                } else {
                    match serde_json::from_slice::<Line>(raw) {
                        Ok(l) => {
                            states.insert(l.device, l.state);
                        }
                        // Only the last line can be damaged by a crash.
                        Err(_) if last => break,
                        Err(e) => {
                            return Err(foreign(format!(
                                "line {} is damaged ({e}); the lines after it record finished \
                                 devices, so the journal is not cut: repair or remove that line",
                                i + 1
                            )));
                        }
                    }
                }
                good_len += raw.len() as u64;
            }
        }
        // Cut a damaged tail so that new lines start on a line of their own.
        file.set_len(good_len).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        if !header_seen {
            let header = serde_json::to_string(&Header {
                journal: MAGIC.into(),
                lot: lot.into(),
            })
            .map_err(|e| io(std::io::Error::other(e)))?;
            writeln!(file, "{header}").map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            states,
        })
    }

    /// What the journal held for `device` when it was opened.
    pub fn state(&self, device: &str) -> Option<&DeviceState> {
        self.states.get(device)
    }

    /// Appends `state` for `device` and syncs it to disk.
    pub fn record(&self, device: &str, at: i64, state: DeviceState) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let mut text = serde_json::to_string(&Line {
            device: device.to_owned(),
            at,
            state,
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        text.push('\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| io(std::io::Error::other("journal lock poisoned")))?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_reopening_and_a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lot.journal");
        {
            let j = Journal::open(&path, "lot-1").unwrap();
            j.record("s-1", 1, DeviceState::Failed { error: "x".into() })
                .unwrap();
            j.record(
                "s-1",
                2,
                DeviceState::Done {
                    serial: "aa".into(),
                    millis: 5,
                },
            )
            .unwrap();
            j.record(
                "s-2",
                3,
                DeviceState::Issued {
                    serial: "bb".into(),
                    chain_pem: "c".into(),
                    trust_pem: "t".into(),
                },
            )
            .unwrap();
        }
        // A crash in the middle of a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"device":"s-3","at":4,"eve"#).unwrap();
        drop(f);
        let j = Journal::open(&path, "lot-1").unwrap();
        assert!(matches!(j.state("s-1"), Some(DeviceState::Done { serial, .. }) if serial == "aa"));
        assert!(matches!(j.state("s-2"), Some(DeviceState::Issued { .. })));
        assert!(j.state("s-3").is_none());
        j.record("s-3", 5, DeviceState::Failed { error: "y".into() })
            .unwrap();
        drop(j);
        let j = Journal::open(&path, "lot-1").unwrap();
        assert!(matches!(j.state("s-3"), Some(DeviceState::Failed { .. })));
        // A torn last line that is not even UTF-8 is dropped too.
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"device\":\"s-4\",\"error\":\"\xc3")
            .unwrap();
        drop(f);
        let j = Journal::open(&path, "lot-1").unwrap();
        assert!(j.state("s-4").is_none());
        // A second run of the lot while this one holds the journal is refused.
        let e = Journal::open(&path, "lot-1").err().unwrap().to_string();
        assert!(e.contains("another run of this lot"), "{e}");
        drop(j);
        // Another lot's journal is refused.
        let e = Journal::open(&path, "lot-2").err().unwrap().to_string();
        assert!(e.contains("belongs to lot `lot-1`"), "{e}");
        // A damaged line followed by good ones is not cut away: the journal is refused.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(2, "garbage");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let e = Journal::open(&path, "lot-1").err().unwrap().to_string();
        assert!(e.contains("line 3 is damaged"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            lines.len()
        );
    }
}
