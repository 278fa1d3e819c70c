//! Durable file-system primitives: fsync a directory, replace a file atomically, create a
//! file once (never replacing it), fsync a whole tree, and name temporaries so a restart can
//! find and remove the ones a crash left.
//!
//! Everything here is blocking and Linux-first (`File::open(dir)?.sync_all()` is how a
//! directory entry is made durable there). A replacement is atomic against crashes and
//! concurrent readers: a reader sees the old file or the new one, never a mix, and after a
//! power cut the name holds one of the two. The trade-off is one extra file and three
//! fsyncs per write, which is fine for the small records the agent keeps outside SQLite.
//!
//! Temporaries are named `.<name>.<nonce>.tmp` (no second dot for a hidden name) next to the
//! file they will replace, so [`remove_atomic_temporaries`] can remove exactly the ones
//! belonging to one file name and nothing else that happens to end in `.tmp`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many times a fresh name is tried when a temporary name is already taken.
const MAX_NAME_ATTEMPTS: u32 = 16;

/// Makes the entries of directory `dir` (creations, renames, removals) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path`; `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A name fragment unique within this host for the lifetime of the process: pid, a
/// per-process counter and the clock. Not secret and not meant to be.
pub fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{count}-{nanos:08x}", std::process::id())
}

/// `file_name` as a hidden name: unchanged when it already starts with a dot.
fn hidden(file_name: &str) -> String {
    if file_name.starts_with('.') {
        file_name.to_owned()
    } else {
        format!(".{file_name}")
    }
}

/// The temporary name [`write_file_atomically`] uses for `file_name` in the same directory:
/// `.<name>.<nonce>.tmp` (`.ferry-slot.<nonce>.tmp` for `.ferry-slot`).
fn temp_name(file_name: &str) -> String {
    format!("{}.{}.tmp", hidden(file_name), nonce())
}

/// Whether `candidate` is a temporary that [`write_file_atomically`] made for `file_name`.
pub fn is_atomic_temporary_of(file_name: &str, candidate: &str) -> bool {
    candidate
        .strip_prefix(hidden(file_name).as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|nonce| !nonce.is_empty() && !nonce.contains('/'))
}

/// Replaces `path` with `bytes` atomically and durably: writes a temporary in the same
/// directory, fsyncs it, renames it over `path` and fsyncs the directory. On error the
/// temporary is removed (best effort) and `path` is untouched or fully replaced.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file_atomically_with(path, bytes, || Ok(()))
}

/// [`write_file_atomically`] with a hook run after the temporary is durable and before the
/// rename: the place for a failpoint or a last check. An error from it aborts the write.
pub(crate) fn write_file_atomically_with(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no UTF-8 file name"))?;
    let dir = parent_dir(path);

    let (temp_path, file) = create_new_temp(dir, file_name, 0o666)?;
    let result = fill_and_rename(file, bytes, &temp_path, path, before_rename);
    if result.is_err() {
        // Gone already when the rename succeeded and only the directory fsync failed.
        let _ = fs::remove_file(&temp_path);
    }
    result
}

fn fill_and_rename(
    mut file: File,
    bytes: &[u8],
    temp_path: &Path,
    path: &Path,
    before_rename: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    before_rename()?;
    fs::rename(temp_path, path)?;
    fsync_dir(parent_dir(path))
}

/// Creates `path` holding `bytes`, durably and with permission bits `mode` (before the
/// umask), unless a file of that name exists: the bytes are written and fsynced under a
/// temporary name created with `mode` (so they are never readable more widely), then
/// hard-linked to `path` — a link never replaces — and the temporary removed. Returns false,
/// leaving `path` alone, when it already existed; of two processes racing, both end up
/// reading the one complete file the first link made.
pub fn create_file_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no UTF-8 file name"))?;
    let dir = parent_dir(path);
    let (temp_path, mut file) = create_new_temp(dir, file_name, mode)?;
    let linked = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        match fs::hard_link(&temp_path, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let removed = fs::remove_file(&temp_path);
    let created = linked?;
    removed?;
    fsync_dir(dir)?;
    Ok(created)
}

fn create_new_temp(dir: &Path, file_name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    let mut last_error = None;
    for _ in 0..MAX_NAME_ATTEMPTS {
        let temp_path = dir.join(temp_name(file_name));
        match OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp_path) {
            Ok(file) => return Ok((temp_path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Removes the temporaries [`write_file_atomically`] left in `dir` for `file_name` (a
/// crash between create and rename leaves one). Returns how many were removed.
pub fn remove_atomic_temporaries(dir: &Path, file_name: &str) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_atomic_temporary_of(file_name, name) && !entry.file_type()?.is_dir() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        write_file_atomically(&path, b"one").unwrap();
        write_file_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("record")]);
    }

    #[test]
    fn failing_before_rename_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        write_file_atomically(&path, b"old").unwrap();
        let err = write_file_atomically_with(&path, b"new", || Err(io::Error::other("injected"))).unwrap_err();
        assert_eq!(err.to_string(), "injected");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_are_recognised_by_file_name_only() {
        let name = temp_name(".ferry-slot");
        assert!(is_atomic_temporary_of(".ferry-slot", &name));
        assert!(name.starts_with(".ferry-slot.") && name.ends_with(".tmp"), "{name}");
        assert!(!is_atomic_temporary_of(".ferry-slot", ".ferry-slot..tmp"));
        assert!(!is_atomic_temporary_of(".ferry-slot", ".ferry-slot"));
        assert!(is_atomic_temporary_of("record", ".record.1-2-3.tmp"));
        assert!(!is_atomic_temporary_of(".ferry-slot", "notes.tmp"));
        assert!(!is_atomic_temporary_of("record", &name));
    }

    #[test]
    fn stray_temporaries_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(temp_name("record")), b"x").unwrap();
        fs::write(dir.path().join("keep.tmp"), b"x").unwrap();
        fs::write(dir.path().join("record"), b"x").unwrap();
        assert_eq!(remove_atomic_temporaries(dir.path(), "record").unwrap(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn create_once_never_replaces_and_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(create_file_atomically(&path, b"first", 0o600).unwrap());
        assert!(!create_file_atomically(&path, b"second", 0o600).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
    }
}
