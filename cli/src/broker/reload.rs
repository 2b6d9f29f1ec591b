//! Making the broker reload its files, and only when it will be able to read them.
//!
//! Mosquitto 2.0 reads its certificate, key and CRL file again at every SIGHUP, as the user it
//! dropped to (`mosquitto` on Debian). A file that user cannot read (say, a renewal wrote a
//! root-only key) makes that reload fail: every new TLS handshake fails and open sessions
//! stop. So before a reload the files are checked as the broker's user, with the identity of
//! the running broker process, and a reload that would fail is not sent.
//!
//! The pid file lies in a directory the broker's user owns (`/run/mosquitto`), so its content
//! is not trusted: it must be a regular file (no symbolic link, no FIFO), is read bounded, and
//! the process it names is signalled only when it runs as the pid file's owner (or the file is
//! root's) and has a SIGHUP handler installed (Mosquitto installs it only after loading its
//! files at start: a SIGHUP before that would kill it).
//!
//! The check evaluates owner, group and mode bits along the whole path (search permission on
//! every directory, read permission on the file) with the process's file-system uid, gid and
//! supplementary groups. POSIX ACLs are not evaluated: a file or directory that has one is
//! reported as not checkable (give access through owner or group instead).

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
        for p in dirs
            .iter()
            .map(PathBuf::as_path)
            .chain([path, real.as_path()])
        {
            if has_acl(p) {
                return Some(format!(
                    "{} has a POSIX ACL, which this check does not evaluate: give {} access \
                     through owner, group and mode instead",
                    p.display(),
                    self.name()
                ));
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

/// Whether `path` carries a POSIX access ACL (whose entries can deny what the mode bits show).
fn has_acl(path: &Path) -> bool {
    rustix::fs::getxattr_query(path, "system.posix_acl_access").is_ok()
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

/// What the check needs of the process a pid file names.
struct Process {
    user: BrokerUser,
    real_uid: u32,
    /// Whether it has a SIGHUP handler (bit 0 of `SigCgt`).
    catches_hup: bool,
}

impl Process {
    fn of(pid: i32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key));
        let real_uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
        let caught = u64::from_str_radix(field("SigCgt:")?.trim(), 16).ok()?;
        Some(Self {
            user: BrokerUser::parse_status(&status)?,
            real_uid,
            catches_hup: caught & 1 == 1,
        })
    }
}

/// The pid in `pid_file` and the file's owner; `None` when there is no such file. The file
/// must be a regular file (not a symbolic link, FIFO or device), and is read bounded; its
/// content is never echoed (it could be another file's, through a planted link).
fn read_pid_file(pid_file: &Path) -> Result<Option<(i32, u32)>, ReloadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(pid_file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ReloadError::Failed(format!(
                "opening pid file {} (it must be a regular file, not a symbolic link): {e}",
                pid_file.display()
            )));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| ReloadError::Failed(format!("{}: {e}", pid_file.display())))?;
    if !meta.is_file() {
        return Err(ReloadError::Failed(format!(
            "{} is not a regular file",
            pid_file.display()
        )));
    }
    let mut text = String::new();
    file.take(32)
        .read_to_string(&mut text)
        .map_err(|e| ReloadError::Failed(format!("reading {}: {e}", pid_file.display())))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 1 => Ok(Some((pid, meta.uid()))),
        _ => Err(ReloadError::Failed(format!(
            "{} does not hold a process id",
            pid_file.display()
        ))),
    }
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
    /// The broker is starting and has no SIGHUP handler yet: it is reading its files now, and
    /// a SIGHUP would kill it. The reload is to be retried.
    Starting,
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
            let Some((pid, owner)) = read_pid_file(pid_file)? else {
                return Ok(Reloaded::NotRunning(format!(
                    "no pid file {}",
                    pid_file.display()
                )));
            };
            let Some(process) = Process::of(pid) else {
                return Ok(Reloaded::NotRunning(format!(
                    "no process {pid} (from {})",
                    pid_file.display()
                )));
            };
            if owner != 0 && owner != process.real_uid {
                return Err(ReloadError::Failed(format!(
                    "not signalling process {pid} from {}: it runs as uid {}, the pid file \
                     belongs to uid {owner} (a stale or planted pid)",
                    pid_file.display(),
                    process.real_uid
                )));
            }
            if !process.catches_hup {
                return Ok(Reloaded::Starting);
            }
            (Some(pid), Some(process.user))
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
        let me = Process::of(std::process::id() as i32).unwrap().user;
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
        assert!(e.to_string().contains("does not hold a process id"), "{e}");
    }

    #[test]
    fn a_planted_pid_file_is_neither_followed_nor_echoed_nor_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("mosquitto.pid");
        let trigger = Trigger::PidFile(pid_file.clone());
        // A link to a secret: refused, and the secret is not in the error.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "TOP-SECRET").unwrap();
        std::os::unix::fs::symlink(&secret, &pid_file).unwrap();
        let e = reload(&trigger, None, &[]).unwrap_err().to_string();
        assert!(
            e.contains("symbolic link") && !e.contains("TOP-SECRET"),
            "{e}"
        );
        std::fs::remove_file(&pid_file).unwrap();
        // A FIFO: refused at once instead of blocking the agent.
        nix::unistd::mkfifo(&pid_file, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = reload(&trigger, None, &[]).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_file(&pid_file).unwrap();

        // A process with a SIGHUP handler, running as root (these tests run as root).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap : HUP; sleep 30 & wait; wait"])
            .spawn()
            .unwrap();
        std::fs::write(&pid_file, format!("{}\n", child.id())).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while reload(&trigger, None, &[]).unwrap() == Reloaded::Starting {
            assert!(
                std::time::Instant::now() < deadline,
                "sh installed its trap"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // A pid file owned by another user naming it: a planted or stale pid, not signalled.
        nix::unistd::chown(&pid_file, Some(65534.into()), None).unwrap();
        let e = reload(&trigger, None, &[]).unwrap_err().to_string();
        assert!(e.contains("stale or planted"), "{e}");
        let _ = child.kill();
        let _ = child.wait();

        // A process without a SIGHUP handler (a broker still loading its files): not signalled.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::remove_file(&pid_file).unwrap();
        std::fs::write(&pid_file, format!("{}\n", sleeper.id())).unwrap();
        assert_eq!(reload(&trigger, None, &[]).unwrap(), Reloaded::Starting);
        assert!(
            sleeper.try_wait().unwrap().is_none(),
            "not killed by a SIGHUP"
        );
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
}
