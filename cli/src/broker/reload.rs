//! Making the broker reload its files, and only when it will be able to read them.
//!
//! Mosquitto reads its certificate, key, CA file and CRL file at start, as root, and again at
//! every SIGHUP, by then as the user it dropped to (`mosquitto` on Debian). A file that only
//! root can read therefore goes unnoticed until the next reload, which then fails: every new
//! TLS handshake fails and open sessions stop. So before a reload the files are checked as
//! the broker's user, with the identity of the running broker process, and a reload that
//! would fail is not sent.
//!
//! The check evaluates owner, group and mode bits along the whole path (search permission on
//! every directory, read permission on the file) with the process's file-system uid, gid and
//! supplementary groups. POSIX ACLs are not evaluated: a file readable only through an ACL
//! entry is reported unreadable (give access through owner or group instead).

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Who the broker runs as: what the kernel checks file access against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUser {
    /// File-system user id.
    pub uid: u32,
    /// File-system group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl BrokerUser {
    /// The identity of the running process `pid`, from `/proc/<pid>/status`; `None` when no
    /// such process runs.
    pub fn of_process(pid: i32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Self::parse_status(&status)
    }

    /// The identity of the user `name` (or numeric id): its uid, primary group and the groups
    /// it is a member of, as the broker gets them when it drops to that user.
    pub fn of_user(name: &str) -> Result<Self, String> {
        let user = match name.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(uid.into()),
            Err(_) => nix::unistd::User::from_name(name),
        }
        .map_err(|e| format!("looking up user {name}: {e}"))?
        .ok_or_else(|| format!("no user {name} on this host"))?;
        let cname = std::ffi::CString::new(user.name.as_str())
            .map_err(|_| format!("user name {name} holds a NUL byte"))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| format!("looking up the groups of {name}: {e}"))?;
        Ok(Self {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(|g| g.as_raw()).collect(),
        })
    }

    fn parse_status(status: &str) -> Option<Self> {
        // "Uid:\treal\teffective\tsaved\tfs": access checks use the fs id.
        let ids = |key: &str| -> Option<Vec<u32>> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..]
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect()
        };
        Some(Self {
            uid: *ids("Uid:")?.get(3)?,
            gid: *ids("Gid:")?.get(3)?,
            groups: ids("Groups:").unwrap_or_default(),
        })
    }

    fn name(&self) -> String {
        nix::unistd::User::from_uid(self.uid.into())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {}", self.uid), |u| u.name)
    }

    /// Whether this user may do `want` (4 read, 1 search) on a file with this metadata.
    fn may(&self, meta: &std::fs::Metadata, want: u32) -> bool {
        if self.uid == 0 {
            // CAP_DAC_OVERRIDE: root reads everything and searches every directory.
            return true;
        }
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if meta.gid() == self.gid || self.groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }

    /// Why `path` is not readable by this user, or `None` when it is: every directory on the
    /// way (also those of the path as written, before symbolic links are followed) must be
    /// searchable, and the file readable.
    pub fn cannot_read(&self, path: &Path) -> Option<String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return Some(format!("{}: {e}", path.display())),
        };
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in [path, real.as_path()] {
            for dir in p.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()) {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_owned());
                }
            }
        }
        for dir in &dirs {
            let Ok(m) = std::fs::metadata(dir) else {
                continue;
            };
            if !self.may(&m, 0o1) {
                return Some(format!(
                    "{} cannot enter directory {} ({})",
                    self.name(),
                    dir.display(),
                    describe(&m)
                ));
            }
        }
        if !self.may(&meta, 0o4) {
            return Some(format!(
                "{} cannot read {} ({})",
                self.name(),
                path.display(),
                describe(&meta)
            ));
        }
        None
    }
}

/// "owner root, group mosquitto, mode 0640".
fn describe(meta: &std::fs::Metadata) -> String {
    let owner = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    format!(
        "owner {owner}, group {group}, mode {:04o}",
        meta.mode() & 0o7777
    )
}

/// How the broker is made to reload.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// SIGHUP to the process whose pid this file holds (Mosquitto's `pid_file`).
    PidFile(PathBuf),
    /// A shell command (e.g. `systemctl reload mosquitto`).
    Command(String),
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The broker was told to reload.
    Sent,
    /// No broker runs (no pid file, or no process with its pid): it reads the files when it
    /// starts, so there is nothing to reload. This is the normal case at boot, when the agent
    /// starts before the broker.
    NotRunning(String),
}

/// Why a reload was not sent or failed.
#[derive(Debug)]
pub enum ReloadError {
    /// The broker's user could not read these files: reloading would make the broker fail.
    Unreadable(Vec<String>),
    /// The pid file, the signal or the command failed.
    Failed(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Unreadable(why) => write!(
                f,
                "NOT RELOADING the broker: it would fail to load its files and refuse every new \
                 connection. {}. Give the broker's user read access (e.g. `chgrp mosquitto` \
                 and `chmod 0640` on the key, or reissue the bundle with --owner/--group \
                 --key-mode 0640); the broker keeps serving with the files it loaded before",
                why.join("; ")
            ),
            ReloadError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ReloadError {}

/// Makes the broker reload, after checking that its user can read every one of `files`. The
/// user is the one the broker process runs as (with a pid file), else `user` when given;
/// with neither, the files are not checked.
pub fn reload(
    trigger: &Trigger,
    user: Option<&BrokerUser>,
    files: &[&Path],
) -> Result<Reloaded, ReloadError> {
    let (pid, running_as) = match trigger {
        Trigger::PidFile(pid_file) => {
            let text = match std::fs::read_to_string(pid_file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Reloaded::NotRunning(format!(
                        "no pid file {}",
                        pid_file.display()
                    )));
                }
                Err(e) => {
                    return Err(ReloadError::Failed(format!(
                        "reading pid file {}: {e}",
                        pid_file.display()
                    )));
                }
            };
            let pid: i32 = text.trim().parse().map_err(|_| {
                ReloadError::Failed(format!(
                    "{} does not hold a pid: {:?}",
                    pid_file.display(),
                    text.trim()
                ))
            })?;
            if pid <= 0 {
                return Err(ReloadError::Failed(format!(
                    "pid {pid} in {} is not valid",
                    pid_file.display()
                )));
            }
            match BrokerUser::of_process(pid) {
                Some(u) => (Some(pid), Some(u)),
                None => {
                    return Ok(Reloaded::NotRunning(format!(
                        "no process {pid} (from {})",
                        pid_file.display()
                    )));
                }
            }
        }
        Trigger::Command(_) => (None, None),
    };
    if let Some(user) = running_as.as_ref().or(user) {
        let why: Vec<String> = files.iter().filter_map(|f| user.cannot_read(f)).collect();
        if !why.is_empty() {
            return Err(ReloadError::Unreadable(why));
        }
    }
    match (trigger, pid) {
        (Trigger::PidFile(_), Some(pid)) => {
            let p = rustix::process::Pid::from_raw(pid)
                .ok_or_else(|| ReloadError::Failed(format!("pid {pid} is not valid")))?;
            match rustix::process::kill_process(p, rustix::process::Signal::HUP) {
                Ok(()) => Ok(Reloaded::Sent),
                // Gone between the check and the signal.
                Err(rustix::io::Errno::SRCH) => {
                    Ok(Reloaded::NotRunning(format!("process {pid} has exited")))
                }
                Err(e) => Err(ReloadError::Failed(format!("sending SIGHUP to {pid}: {e}"))),
            }
        }
        (Trigger::Command(cmd), _) => {
            let status = std::process::Command::new("sh")
                .args(["-c", cmd])
                .status()
                .map_err(|e| ReloadError::Failed(format!("running `{cmd}`: {e}")))?;
            if status.success() {
                Ok(Reloaded::Sent)
            } else {
                Err(ReloadError::Failed(format!(
                    "reload command `{cmd}` failed: {status}"
                )))
            }
        }
        (Trigger::PidFile(_), None) => Err(ReloadError::Failed("no pid".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_fs_ids_and_groups_are_read_from_proc_status() {
        let status = "Name:\tmosquitto\nUid:\t0\t105\t105\t105\nGid:\t0\t108\t108\t108\n\
                      Groups:\t108 111 \n";
        assert_eq!(
            BrokerUser::parse_status(status),
            Some(BrokerUser {
                uid: 105,
                gid: 108,
                groups: vec![108, 111]
            })
        );
        let me = BrokerUser::of_process(std::process::id() as i32).unwrap();
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
    }

    #[test]
    fn owner_group_and_other_bits_and_every_directory_on_the_way_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "k").unwrap();
        let meta = std::fs::metadata(&key).unwrap();
        // Someone who is neither the owner nor in the file's group.
        let stranger = BrokerUser {
            uid: meta.uid() + 1000,
            gid: meta.gid() + 1000,
            groups: vec![],
        };
        let in_group = BrokerUser {
            groups: vec![meta.gid()],
            ..stranger.clone()
        };
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&key, 0o600);
        let why = stranger
            .cannot_read(&key)
            .expect("0600 is the owner's only");
        assert!(
            why.contains("cannot read") && why.contains("mode 0600"),
            "{why}"
        );
        assert!(in_group.cannot_read(&key).is_some());
        set(&key, 0o640);
        assert!(in_group.cannot_read(&key).is_none());
        assert!(stranger.cannot_read(&key).is_some());
        set(&key, 0o644);
        assert!(stranger.cannot_read(&key).is_none());
        // A readable file in a directory the user cannot enter.
        set(dir.path(), 0o700);
        let why = stranger.cannot_read(&key).expect("0700 directory");
        assert!(why.contains("cannot enter directory"), "{why}");
        set(dir.path(), 0o755);
        // Through a symbolic link the target's directories count too.
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::rename(&key, inner.join("key.pem")).unwrap();
        std::os::unix::fs::symlink(inner.join("key.pem"), &key).unwrap();
        set(&inner, 0o700);
        assert!(stranger.cannot_read(&key).is_some());
        set(&inner, 0o711);
        assert!(stranger.cannot_read(&key).is_none());
        let root = BrokerUser {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        assert!(root.cannot_read(&key).is_none());
        assert!(root.cannot_read(&dir.path().join("missing")).is_some());
    }

    #[test]
    fn a_named_user_is_looked_up_with_its_groups() {
        let root = BrokerUser::of_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert_eq!(BrokerUser::of_user("0").unwrap(), root);
        let e = BrokerUser::of_user("no-such-user-hallmark").unwrap_err();
        assert!(e.contains("no user no-such-user-hallmark"), "{e}");
    }

    #[test]
    fn no_pid_file_or_no_such_process_is_a_broker_that_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("mosquitto.pid");
        let trigger = Trigger::PidFile(pid_file.clone());
        assert!(matches!(
            reload(&trigger, None, &[]),
            Ok(Reloaded::NotRunning(_))
        ));
        // A pid that no process has (above the kernel's pid_max limit of 2^22).
        std::fs::write(&pid_file, "4194305\n").unwrap();
        assert!(matches!(
            reload(&trigger, None, &[]),
            Ok(Reloaded::NotRunning(_))
        ));
        std::fs::write(&pid_file, "mosquitto\n").unwrap();
        let e = reload(&trigger, None, &[]).unwrap_err();
        assert!(e.to_string().contains("does not hold a pid"), "{e}");
    }
}
