//! Comparing a directory (the active slot) with the tree it was checked out from, for drift
//! detection (DESIGN "Drift").
//!
//! The walk never follows symlinks. A file's content is compared by size first and then by
//! hashing it as a git blob, so an unchanged slot costs one read of every file. Executable
//! bits are compared the way git does (owner execute bit); other permission bits, owners and
//! timestamps are not drift. An added or removed directory is reported once, not per file
//! inside it. The top-level `.ferry-slot` record is ignored.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gix_object::bstr::{BStr, BString, ByteSlice};

use super::error::GitError;
use super::slot_walk::{walk_slot, Found};
use super::tree::{EntryKind, ValidatedTree};
use super::{rel_path, ObjectStore};

/// One path that differs between the directory and the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftEntry {
    /// Path relative to the compared directory.
    pub path: PathBuf,
    /// How it differs.
    pub kind: DriftKind,
}

/// How a path differs from the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    /// On disk but not in the tree.
    Added,
    /// In the tree but not on disk.
    Removed,
    /// A regular file in both whose content and/or executable bit differ.
    Modified {
        /// The bytes differ.
        content: bool,
        /// The executable bit differs.
        mode: bool,
    },
    /// A symlink in both whose target differs.
    SymlinkTarget,
    /// A different kind of thing (file, directory, symlink, other) than in the tree.
    TypeChanged,
}

impl std::fmt::Display for DriftKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriftKind::Added => "added",
            DriftKind::Removed => "removed",
            DriftKind::Modified { content: true, mode: true } => "content and mode changed",
            DriftKind::Modified { content: true, .. } => "content changed",
            DriftKind::Modified { .. } => "mode changed",
            DriftKind::SymlinkTarget => "symlink target changed",
            DriftKind::TypeChanged => "type changed",
        })
    }
}

/// Lists the paths of `dir` that differ from `tree`, sorted by path. `store` supplies the
/// object format used to hash file contents.
pub fn diff_dir_against_tree(
    store: &ObjectStore,
    tree: &ValidatedTree,
    dir: &Path,
) -> Result<Vec<DriftEntry>, GitError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| GitError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(GitError::io(dir, std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory")));
    }
    let mut diff = Diff { kind: store.kind(), seen: HashSet::new(), walked_dirs: HashSet::new(), out: Vec::new() };
    diff.walked_dirs.insert(BString::default());
    walk_slot(dir, tree, &mut |found: Found| diff.compare(found))?;

    // Missing entries: report each one whose parent directory was walked, so a removed
    // directory shows up once.
    for entry in tree.entries() {
        if diff.seen.contains(entry.path.as_bstr()) {
            continue;
        }
        let parent = entry.path.rfind_byte(b'/').map_or(&b""[..], |i| &entry.path[..i]);
        if diff.walked_dirs.contains(parent.as_bstr()) {
            diff.push(entry.path.as_bstr(), DriftKind::Removed);
        }
    }
    let mut out = diff.out;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

struct Diff {
    kind: gix_hash::Kind,
    seen: HashSet<BString>,
    walked_dirs: HashSet<BString>,
    out: Vec<DriftEntry>,
}

impl Diff {
    fn push(&mut self, path: &BStr, kind: DriftKind) {
        self.out.push(DriftEntry { path: rel_path(path).to_owned(), kind });
    }

    /// Compares one entry of the directory with the tree; returns whether to walk into it.
    fn compare(&mut self, found: Found) -> Result<bool, GitError> {
        let Found { path, abs, meta, entry } = found;
        let Some(entry) = entry else {
            self.push(path, DriftKind::Added);
            return Ok(false);
        };
        self.seen.insert(path.to_owned());
        let file_type = meta.file_type();
        match &entry.kind {
            EntryKind::Dir if file_type.is_dir() => {
                self.walked_dirs.insert(path.to_owned());
                return Ok(true);
            }
            EntryKind::Symlink { target } if file_type.is_symlink() => {
                let actual = std::fs::read_link(abs).map_err(|e| GitError::io(abs, e))?;
                if actual.as_os_str().as_bytes() != target.as_slice() {
                    self.push(path, DriftKind::SymlinkTarget);
                }
            }
            EntryKind::File { executable, size } if file_type.is_file() => {
                let mode = (meta.permissions().mode() & 0o100 != 0) != *executable;
                let content = meta.len() != *size || self.blob_id(abs, meta.len())? != entry.id;
                if content || mode {
                    self.push(path, DriftKind::Modified { content, mode });
                }
            }
            _ => self.push(path, DriftKind::TypeChanged),
        }
        Ok(false)
    }

    /// The git blob id of the file at `path`, streamed.
    fn blob_id(&self, path: &Path, size: u64) -> Result<gix_hash::ObjectId, GitError> {
        let mut file = gix_fs::open_options_no_follow().read(true).open(path).map_err(|e| GitError::io(path, e))?;
        let mut hasher = gix_hash::hasher(self.kind);
        hasher.update(&gix_object::encode::loose_header(gix_object::Kind::Blob, size));
        let mut buf = vec![0; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(GitError::io(path, e)),
            };
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        if total != size {
            // Changed while we read it: certainly not the blob.
            return Ok(gix_hash::ObjectId::null(self.kind));
        }
        hasher.try_finalize().map_err(|e| GitError::io(path, std::io::Error::other(format!("{e}"))))
    }
}
