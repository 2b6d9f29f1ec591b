//! Atomic file writes: a reader sees the old file or the new one, never a partial one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory, fsyncs it, sets
/// `mode`, renames it over `path` and fsyncs the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let mut random = [0u8; 6];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| std::io::Error::other("no randomness"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        hex::encode(random)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `files` (name, content, mode) as the complete new content of directory `dir`,
/// atomically: a reader (or a crash) sees either the old directory or the new one, never a mix.
///
/// The files go into a fresh sibling directory, are fsynced, and the two directories are then
/// swapped with `renameat2(RENAME_EXCHANGE)` (or renamed into place when `dir` is new). Other
/// regular files already in `dir` are carried over; a `dir` holding anything but regular files
/// (subdirectories, links) is refused rather than emptied. Leftovers of an interrupted earlier
/// run are cleaned first (and a bundle caught between the two renames of the fallback is put
/// back).
pub fn replace_dir_atomically(dir: &Path, files: &[(&str, &[u8], u32)]) -> std::io::Result<()> {
    replace_dir_with_access(dir, files, &Access::default())
}

/// Owner, group and modes asked for a directory write. What is `None` (or not listed) is
/// inherited from the directory and files being replaced, so that replacing a bundle never
/// changes who may read it; a new directory gets the caller's ids, mode 0700, and each file
/// the mode given with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Owner of the directory and every file.
    pub uid: Option<u32>,
    /// Group of the directory and every file.
    pub gid: Option<u32>,
    /// Mode of the directory.
    pub dir_mode: Option<u32>,
    /// Modes of named files.
    pub file_modes: Vec<(&'static str, u32)>,
}

/// `(uid, gid, mode)` of what a write replaces, if it exists.
fn current(path: &Path) -> Option<(u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.uid(), m.gid(), m.mode() & 0o7777))
}

/// Gives `path` the ids and mode it is to have: those asked for, else those of `was` (what it
/// replaces), else the caller's and `default_mode`. The ids are only changed when they differ,
/// so an unprivileged caller can still replace its own bundles; when they differ and cannot be
/// set, the write fails rather than silently change who owns the bundle.
fn apply(
    path: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    was: Option<(u32, u32, u32)>,
    default_mode: u32,
) -> std::io::Result<()> {
    let uid = uid.or(was.map(|w| w.0));
    let gid = gid.or(was.map(|w| w.1));
    let mode = mode.or(was.map(|w| w.2)).unwrap_or(default_mode);
    let now = current(path).ok_or_else(|| std::io::Error::other("staged file vanished"))?;
    let uid = uid.filter(|u| *u != now.0);
    let gid = gid.filter(|g| *g != now.1);
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "giving {} owner {} and group {}: {e} (changing a bundle's owner or group \
                     takes root)",
                    path.display(),
                    uid.map_or("unchanged".into(), |u| u.to_string()),
                    gid.map_or("unchanged".into(), |g| g.to_string()),
                ),
            )
        })?;
    }
    // After chown, which may clear set-id bits.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// [`replace_dir_atomically`] with the owner, group and modes of `access`, applied to the
/// directory and every file before the swap (so the new bundle is never visible with other
/// ids or modes than it keeps).
pub fn replace_dir_with_access(
    dir: &Path,
    files: &[(&str, &[u8], u32)],
    access: &Access,
) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};

    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    fs::create_dir_all(parent)?;
    recover_interrupted(parent, dir, &name)?;
    if dir.is_dir() {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{} holds {}, which is not a regular file; a credential bundle directory \
                         holds only files, so choose a directory of its own",
                        dir.display(),
                        entry.file_name().to_string_lossy()
                    ),
                ));
            }
        }
    }
    let mut random = [0u8; 6];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| std::io::Error::other("no randomness"))?;
    let staging = parent.join(format!(".{name}.new-{}", hex::encode(random)));
    let old_dir = current(dir).filter(|_| dir.is_dir());
    let result = (|| {
        fs::DirBuilder::new().mode(0o700).create(&staging)?;
        for (file, content, mode) in files {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(*mode)
                .open(staging.join(file))?;
            f.write_all(content)?;
            drop(f);
            let path = staging.join(file);
            // A file the old bundle did not have takes the directory's ids.
            let was = current(&dir.join(file)).or(old_dir.map(|(u, g, _)| (u, g, *mode)));
            let asked = access
                .file_modes
                .iter()
                .find(|(n, _)| n == file)
                .map(|(_, m)| *m);
            apply(&path, access.uid, access.gid, asked, was, *mode)?;
            File::open(&path)?.sync_all()?;
        }
        if dir.is_dir() {
            // Carry over what else lives there (the operator's files, not ours), with their
            // owner and group: `fs::copy` keeps only the mode.
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let fname = entry.file_name();
                let ours = files.iter().any(|(n, _, _)| fname == *n);
                if !ours {
                    let copy = staging.join(&fname);
                    fs::copy(entry.path(), &copy)?;
                    let was = current(&entry.path());
                    apply(&copy, access.uid, access.gid, None, was, 0o600)?;
                    File::open(&copy)?.sync_all()?;
                }
            }
        }
        apply(
            &staging,
            access.uid,
            access.gid,
            access.dir_mode,
            old_dir,
            0o700,
        )?;
        File::open(&staging)?.sync_all()?;
        if dir.is_dir() {
            match renameat_with(CWD, &staging, CWD, dir, RenameFlags::EXCHANGE) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                    // No RENAME_EXCHANGE on this file system: two renames, a short window in
                    // which `dir` is missing but never mixed (recover_interrupted restores it).
                    let old = parent.join(format!(".{name}.old-{}", hex::encode(random)));
                    fs::rename(dir, &old)?;
                    if let Err(e) = fs::rename(&staging, dir) {
                        fs::rename(&old, dir)?;
                        return Err(e);
                    }
                    File::open(parent)?.sync_all()?;
                    let _ = fs::remove_dir_all(&old);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            File::open(parent)?.sync_all()?;
            // `staging` now holds the previous content; failing to remove it is not a failure
            // of the write (the next write cleans it up).
            let _ = fs::remove_dir_all(&staging);
            Ok(())
        } else {
            fs::rename(&staging, dir)?;
            File::open(parent)?.sync_all()
        }
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Cleans up after a write that was interrupted: puts back a directory caught between the
/// two renames of the fallback path, and removes staging leftovers.
fn recover_interrupted(parent: &Path, dir: &Path, name: &str) -> std::io::Result<()> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    let new_prefix = format!(".{name}.new-");
    let old_prefix = format!(".{name}.old-");
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let fname = entry.file_name().to_string_lossy().into_owned();
        if fname.starts_with(&old_prefix) && !dir.exists() {
            fs::rename(entry.path(), dir)?;
        } else if fname.starts_with(&new_prefix) || fname.starts_with(&old_prefix) {
            stale.push(entry.path());
        }
    }
    for p in stale {
        let _ = fs::remove_dir_all(p);
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_directory_whole_and_keeps_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("bundle");
        replace_dir_atomically(&b, &[("a", b"1", 0o600), ("b", b"1", 0o644)]).unwrap();
        std::fs::write(b.join("notes.txt"), "mine").unwrap();
        std::fs::create_dir(dir.path().join(".bundle.new-stale")).unwrap();
        std::fs::create_dir(b.join("sub")).unwrap();
        let refused = replace_dir_atomically(&b, &[("a", b"x", 0o600)]).unwrap_err();
        assert!(
            refused.to_string().contains("not a regular file"),
            "{refused}"
        );
        assert_eq!(
            fs::read(b.join("a")).unwrap(),
            b"1",
            "a refused write changes nothing"
        );
        std::fs::remove_dir(b.join("sub")).unwrap();
        replace_dir_atomically(&b, &[("a", b"2", 0o600), ("b", b"2", 0o644)]).unwrap();
        assert_eq!(fs::read(b.join("a")).unwrap(), b"2");
        assert_eq!(fs::read(b.join("b")).unwrap(), b"2");
        assert_eq!(fs::read(b.join("notes.txt")).unwrap(), b"mine");
        assert_eq!(
            fs::metadata(b.join("a")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["bundle"], "no staging left behind");
    }

    #[test]
    fn a_replacement_keeps_owner_group_and_modes_unless_told_otherwise() {
        use std::os::unix::fs::MetadataExt;
        let at = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("bundle");
        replace_dir_atomically(&b, &[("key", b"1", 0o600), ("cert", b"1", 0o644)]).unwrap();
        // As an admin would (the tests run as root); 65534 is nobody/nogroup.
        fs::write(b.join("notes"), "mine").unwrap();
        for p in [b.clone(), b.join("key"), b.join("cert"), b.join("notes")] {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
        fs::set_permissions(b.join("key"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(&b, fs::Permissions::from_mode(0o750)).unwrap();
        let files: &[(&str, &[u8], u32)] = &[("key", b"2", 0o600), ("cert", b"2", 0o644)];
        replace_dir_atomically(&b, files).unwrap();
        assert_eq!(at(&b), (65534, 65534, 0o750));
        assert_eq!(at(&b.join("key")), (65534, 65534, 0o640));
        assert_eq!(at(&b.join("cert")), (65534, 65534, 0o644));
        assert_eq!(at(&b.join("notes")), (65534, 65534, 0o644), "carried over");
        let explicit = Access {
            uid: Some(0),
            gid: Some(0),
            dir_mode: Some(0o700),
            file_modes: vec![("key", 0o600)],
        };
        replace_dir_with_access(&b, files, &explicit).unwrap();
        assert_eq!(at(&b), (0, 0, 0o700));
        assert_eq!(at(&b.join("key")), (0, 0, 0o600));
        assert_eq!(at(&b.join("notes")), (0, 0, 0o644));
    }

    #[test]
    fn a_bundle_caught_between_two_renames_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("bundle");
        replace_dir_atomically(&b, &[("a", b"1", 0o600)]).unwrap();
        // As if the fallback path crashed after its first rename.
        fs::rename(&b, dir.path().join(".bundle.old-dead")).unwrap();
        replace_dir_atomically(&b, &[("a", b"2", 0o600)]).unwrap();
        assert_eq!(fs::read(b.join("a")).unwrap(), b"2");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
