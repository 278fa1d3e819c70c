//! Bringing a slot that holds one tree to another in place, writing only what changed
//! (DESIGN "Apply", step 4, as docs/decisions.md "In-place slot updates" refines it).
//!
//! A slot is reused only when [`check_intact`] finds it exactly as a checkout or an update
//! left it, judged from metadata without reading file contents: every path of the old tree
//! and nothing else (the root's `.ferry-slot` record aside), each of the right kind, files
//! of the blob's size with mode exactly 0644 or 0755, directories 0755, symlinks with the
//! tree's target, and every one with a status-change time (ctime) earlier than the slot
//! record's. ctime cannot be set from user space: writing, truncating, renaming, linking,
//! `chmod`, `chown` and `touch` all set it to the current time, and a checkout or update
//! returns only once the file-system clock has passed the present, so the record written
//! next is strictly later than everything written before it, and anything changed after the
//! record is caught. (The caller also checks that the record is the one it wrote, by the
//! ctime it noted in SQLite: the record lives in the slot, and a rewritten record would
//! otherwise cover any change before it.) Whatever fails the check (or any error while
//! checking) makes the slot be emptied and checked out whole, as before.
//!
//! [`update`] then removes, deepest first, every old entry the new tree does not hold
//! unchanged (same kind, and for files and links the same blob id, mode and target), and
//! creates, parents first, every new entry the slot does not hold yet, exactly as a
//! checkout would (exclusive creates that never follow a link), then makes it durable with
//! one `syncfs`. The caller removes the slot's record before updating, so a crash midway
//! leaves a slot without a record: incomplete, removed on the next start, never switched to.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gix_object::bstr::ByteSlice;

use super::checkout::{CheckoutStats, Writer};
use super::error::GitError;
use super::slot_walk::{walk_slot, Found, WalkError};
use super::tree::{Entry, EntryKind, ValidatedTree};
use super::{rel_path, ObjectStore};

/// A file's status-change time: seconds and nanoseconds since the Unix epoch.
pub type Ctime = (i64, i64);

/// The ctime of `meta`.
pub fn ctime(meta: &std::fs::Metadata) -> Ctime {
    (meta.ctime(), meta.ctime_nsec())
}

/// Why a slot cannot be updated in place: the first difference found, one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {what}", path.display())]
pub struct NotIntact {
    /// The path that differs, under the slot.
    pub path: PathBuf,
    /// How it differs.
    pub what: String,
}

/// Checks that `dest` holds exactly `tree` as written by a checkout or update, with nothing
/// changed since `record_ctime` (the ctime of the slot's record). See the module docs.
pub fn check_intact(tree: &ValidatedTree, dest: &Path, record_ctime: Ctime) -> Result<(), NotIntact> {
    let mut seen = 0;
    walk_slot(dest, tree, &mut |found: Found| {
        let fail = |what: String| NotIntact { path: found.abs.to_owned(), what };
        let Some(entry) = found.entry else {
            return Err(fail("not in the slot's tree".into()));
        };
        let meta = found.meta;
        if ctime(meta) >= record_ctime {
            return Err(fail("changed after the slot was written (ctime)".into()));
        }
        seen += 1;
        let mode = meta.permissions().mode() & 0o7777;
        let file_type = meta.file_type();
        match &entry.kind {
            EntryKind::Dir if file_type.is_dir() && mode == 0o755 => return Ok(true),
            EntryKind::File { executable, size } if file_type.is_file() => {
                let want = if *executable { 0o755 } else { 0o644 };
                if mode != want || meta.len() != *size {
                    return Err(fail(format!("mode {mode:o}, {} bytes", meta.len())));
                }
            }
            EntryKind::Symlink { target } if file_type.is_symlink() => {
                let actual = std::fs::read_link(found.abs).map_err(|e| fail(format!("cannot read link: {e}")))?;
                if actual.as_os_str().as_bytes() != target.as_slice() {
                    return Err(fail("symlink target differs".into()));
                }
            }
            _ => return Err(fail(format!("not what the tree holds there (mode {mode:o})"))),
        }
        Ok(false)
    })?;
    if seen != tree.entries().len() {
        let on_disk = |e: &&Entry| std::fs::symlink_metadata(dest.join(rel_path(e.path.as_bstr()))).is_ok();
        let missing = tree
            .entries()
            .iter()
            .find(|e| !on_disk(e))
            .map_or_else(PathBuf::new, |e| rel_path(e.path.as_bstr()).to_owned());
        return Err(NotIntact { path: missing, what: "missing".into() });
    }
    Ok(())
}

impl From<WalkError> for NotIntact {
    fn from(e: WalkError) -> Self {
        NotIntact { path: e.path, what: format!("cannot {}: {}", e.op, e.error) }
    }
}

/// Whether the slot can keep `old` where the new tree has `new`.
fn unchanged(old: &Entry, new: &Entry) -> bool {
    match (&old.kind, &new.kind) {
        (EntryKind::Dir, EntryKind::Dir) => true,
        (a, b) => a == b && old.id == new.id,
    }
}

/// Brings `dest`, which holds `old` (checked with [`check_intact`], its record removed), to
/// `new`, writing only what differs; durable (one `syncfs`) before it returns. On error
/// `dest` holds a mix of both trees: the caller removes the slot.
pub fn update(
    store: &ObjectStore,
    old: &ValidatedTree,
    new: &ValidatedTree,
    dest: &Path,
) -> Result<CheckoutStats, GitError> {
    let mut writer = Writer::new(store, dest);

    // Deepest first: a directory's contents sort after it, so they go before it.
    for entry in old.entries().iter().rev() {
        if new.entry(entry.path.as_bstr()).is_some_and(|n| unchanged(entry, n)) {
            continue;
        }
        let path = dest.join(rel_path(entry.path.as_bstr()));
        let removed = match entry.kind {
            EntryKind::Dir => std::fs::remove_dir(&path),
            EntryKind::File { .. } | EntryKind::Symlink { .. } => std::fs::remove_file(&path),
        };
        removed.map_err(|e| GitError::io(&path, e))?;
        writer.count_removed();
    }
    fail::fail_point!("update::after-removals", |_| {
        Err(GitError::io(dest, std::io::Error::other("failpoint update::after-removals fired")))
    });
    for entry in new.entries() {
        if old.entry(entry.path.as_bstr()).is_some_and(|o| unchanged(o, entry)) {
            continue;
        }
        writer.create(entry)?;
    }
    let stats = writer.finish()?;
    tracing::debug!(from = %old.id(), to = %new.id(), dest = %dest.display(), files = stats.files,
        bytes = stats.bytes, removed = stats.removed, "updated in place");
    Ok(stats)
}
