//! Writing a [`ValidatedTree`] into an empty directory, durably (DESIGN "Apply", step 4).
//!
//! Files get the blob's raw bytes, as stored: no `.gitattributes` filter (eol, ident,
//! working-tree-encoding, drivers) ever runs. That is why this module writes the tree itself
//! instead of calling `gix_worktree_state::checkout`: even with options built from plumbing,
//! gix's checkout reads `.gitattributes` from the index it checks out
//! (`State::id_mappings_from_index`) and its filter pipeline then applies `text eol=crlf`,
//! `ident` and `working-tree-encoding`, with no switch to turn attributes off (measured:
//! a file with `* text eol=crlf` came out two bytes longer). Note that `git archive` applies
//! those filters too; a slot matches `git archive` only for trees without such attributes.
//!
//! Entries are written in path order (a directory before its contents). Files are created
//! exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`), so a checkout can never write through a link
//! or over anything already there; validation guarantees no entry lies below a symlink.
//! Files get exactly 0644 or 0755 and directories 0755, whatever the umask. Nothing is
//! fsynced file by file: once everything is written, one `syncfs(2)` on `dest` makes the
//! whole filesystem durable, data and directory entries alike, and reports any writeback
//! error since the checkout began (Linux ≥ 5.8). That is what OSTree does too; an fsync per
//! file was 82 % of a 13,891-file checkout's syscall time (BENCHMARKS.md, "Time to apply").
//!
//! On error `dest` may hold a partial checkout: the caller empties the slot before retrying.

use std::ffi::OsStr;
use std::fs::{DirBuilder, File, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use gix_object::bstr::ByteSlice;

use super::error::GitError;
use super::tree::{EntryKind, ValidatedTree};
use super::{rel_path, ObjectStore};

/// What a checkout wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckoutStats {
    /// Regular files written.
    pub files: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Directories created (`dest` not counted).
    pub dirs: u64,
    /// Bytes written to regular files.
    pub bytes: u64,
}

/// Checks out `tree` into `dest`, which must be an existing, empty directory (not a
/// symlink). Raw blob bytes, modes 0644/0755, symlinks as symlinks; everything durable (one `syncfs`) before it returns.
pub fn checkout(store: &ObjectStore, tree: &ValidatedTree, dest: &Path) -> Result<CheckoutStats, GitError> {
    ensure_empty_dir(dest)?;
    let mut stats = CheckoutStats::default();
    let mut dirs = Vec::new();
    let mut buf = Vec::new();
    for entry in tree.entries() {
        let path = dest.join(rel_path(entry.path.as_bstr()));
        let io = |e| GitError::io(&path, e);
        match &entry.kind {
            EntryKind::Dir => {
                DirBuilder::new().mode(0o755).create(&path).map_err(io)?;
                stats.dirs += 1;
                dirs.push(path);
            }
            EntryKind::File { executable, size } => {
                let blob = gix_object::Kind::Blob;
                let data = store.read_object(&entry.id, blob, *size, Some(entry.path.as_bstr()), &mut buf)?;
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut file = gix_fs::open_options_no_follow()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                file.write_all(data).and_then(|()| file.set_permissions(Permissions::from_mode(mode))).map_err(io)?;
                stats.files += 1;
                stats.bytes += data.len() as u64;
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).map_err(io)?;
                stats.symlinks += 1;
            }
        }
    }
    set_dir_modes(dirs)?;
    let root = File::open(dest).map_err(|e| GitError::io(dest, e))?;
    rustix::fs::syncfs(&root).map_err(|e| GitError::io(dest, e.into()))?;
    tracing::debug!(tree = %tree.id(), dest = %dest.display(), files = stats.files, bytes = stats.bytes, "checked out");
    Ok(stats)
}

fn ensure_empty_dir(dest: &Path) -> Result<(), GitError> {
    let not_empty = || GitError::DestinationNotEmpty { path: dest.to_owned() };
    let meta = std::fs::symlink_metadata(dest).map_err(|e| GitError::io(dest, e))?;
    if !meta.is_dir() {
        return Err(not_empty());
    }
    let mut listing = std::fs::read_dir(dest).map_err(|e| GitError::io(dest, e))?;
    match listing.next() {
        None => Ok(()),
        Some(_) => Err(not_empty()),
    }
}

/// Gives `dirs` exactly 0755, whatever the umask made of them.
fn set_dir_modes(dirs: Vec<std::path::PathBuf>) -> Result<(), GitError> {
    for dir in &dirs {
        std::fs::set_permissions(dir, Permissions::from_mode(0o755)).map_err(|e| GitError::io(dir, e))?;
    }
    Ok(())
}
