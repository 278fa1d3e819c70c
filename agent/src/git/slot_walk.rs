//! Walking a slot directory against the tree it should hold: the traversal that
//! [`super::check_intact`] (is the slot exactly as written?) and
//! [`super::diff_dir_against_tree`] (how has it drifted?) share.
//!
//! Depth first, in directory-listing order, never following a symlink (entries are
//! `lstat`ed); the slot's top-level `.ferry-slot` record is skipped. Each entry found is
//! handed to the visitor with its path from the slot root, its metadata and the tree entry
//! at that path, if any; the walk descends into it only when the visitor asks to.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use gix_object::bstr::{BStr, BString, ByteSlice};

use super::error::GitError;
use super::tree::{Entry, ValidatedTree, SLOT_RECORD};

/// An entry of the slot directory, as the visitor sees it.
pub(super) struct Found<'w, 't> {
    /// Its path from the slot root, slash-separated as in the tree.
    pub path: &'w BStr,
    /// Its path on disk.
    pub abs: &'w Path,
    /// Its metadata (`lstat`).
    pub meta: &'w Metadata,
    /// The tree's entry at `path`, if the tree has one.
    pub entry: Option<&'t Entry>,
}

/// A directory that could not be listed or an entry that could not be `lstat`ed.
#[derive(Debug)]
pub(super) struct WalkError {
    /// What could not be read.
    pub path: PathBuf,
    /// `"list"` or `"stat"`.
    pub op: &'static str,
    /// Why.
    pub error: std::io::Error,
}

impl From<WalkError> for GitError {
    fn from(e: WalkError) -> Self {
        GitError::io(&e.path, e.error)
    }
}

/// Walks `dir` against `tree`: `visit` gets every entry below `dir` and returns whether to
/// descend into it (only ever done for a directory). Stops at the first error, the visitor's
/// or the walk's (converted with `From<WalkError>`).
pub(super) fn walk_slot<'t, E: From<WalkError>>(
    dir: &Path,
    tree: &'t ValidatedTree,
    visit: &mut impl FnMut(Found<'_, 't>) -> Result<bool, E>,
) -> Result<(), E> {
    walk_dir(dir, &BString::default(), tree, visit)
}

fn walk_dir<'t, E: From<WalkError>>(
    abs: &Path,
    rel: &BString,
    tree: &'t ValidatedTree,
    visit: &mut impl FnMut(Found<'_, 't>) -> Result<bool, E>,
) -> Result<(), E> {
    let failed = |path: &Path, op, error| WalkError { path: path.to_owned(), op, error };
    let listing = std::fs::read_dir(abs).map_err(|e| failed(abs, "list", e))?;
    for dirent in listing {
        let dirent = dirent.map_err(|e| failed(abs, "list", e))?;
        let name = dirent.file_name();
        if rel.is_empty() && name.as_bytes() == SLOT_RECORD {
            continue;
        }
        let mut path = rel.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        let on_disk = dirent.path();
        let meta = std::fs::symlink_metadata(&on_disk).map_err(|e| failed(&on_disk, "stat", e))?;
        let entry = tree.entry(path.as_bstr());
        let found = Found { path: path.as_bstr(), abs: &on_disk, meta: &meta, entry };
        if visit(found)? && meta.is_dir() {
            walk_dir(&on_disk, &path, tree, visit)?;
        }
    }
    Ok(())
}
