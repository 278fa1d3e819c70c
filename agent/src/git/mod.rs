//! The agent's local git object store (`<state_dir>/objects`) and everything that turns an
//! untrusted pack into files in a slot: import, tree validation, checkout, drift comparison
//! and pruning. Plumbing gix crates only; the agent never runs a git binary.
//!
//! The flow for one release (DESIGN "Apply", steps 2–4):
//!
//! 1. [`ObjectStore::import_pack`] checks the bundle's prerequisites, reads the pack header
//!    and enforces the object count before reading further, streams the pack into
//!    `objects/pack` with thin-pack bases taken from the store, applies the patch section
//!    that may follow (large blobs as bsdiff patches against blobs of the store), refuses
//!    truncated packs and junk after them, checks delta-chain lengths and removes the
//!    `.keep` file.
//! 2. [`validate_tree`] walks the whole snapshot tree before anything is written: names,
//!    modes, sizes, depth, path lengths and symlink targets (resolved through the tree's other
//!    links). It also proves every object the tree reaches is present. Only it can produce a
//!    [`ValidatedTree`].
//! 3. [`checkout`] writes a [`ValidatedTree`] into an empty directory as raw bytes (no
//!    `.gitattributes` filters), then makes it durable with one `syncfs`; or, when the slot
//!    still holds the tree it was last written with ([`check_intact`]), [`update`] writes
//!    only the entries that differ.
//! 4. [`diff_dir_against_tree`] later compares a slot with its tree for drift;
//!    [`ObjectStore::prune`] drops packs no kept release needs.
//!
//! All of it is blocking I/O: call it from `spawn_blocking` or a dedicated thread.

mod checkout;
mod delta;
mod drift;
mod error;
mod import;
mod names;
mod pack_index;
mod pack_reader;
mod pack_stream;
mod prune;
mod slot_walk;
mod tree;
mod update;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gix_hash::{oid, ObjectId};
use gix_object::bstr::BStr;
use gix_object::{Exists, Find, FindHeader};

use pack_reader::PackReader;

pub use checkout::{checkout, CheckoutStats};
pub use drift::{diff_dir_against_tree, DriftEntry, DriftKind};
pub use error::{GitError, Limit, PathProblem, SymlinkProblem};
pub use import::ImportOutcome;
pub use prune::PruneOutcome;
pub use tree::{validate_tree, ValidatedTree};
pub use update::{check_intact, ctime, update, Ctime, NotIntact};

/// A tree path (slash-separated bytes) as a relative file system path.
fn rel_path(path: &BStr) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(path))
}

/// Limits for untrusted packs and trees. `Default` gives values sane for a device; all are
/// checked before the corresponding memory is allocated or file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLimits {
    /// Most objects a pack header may declare (checked before any object is read).
    pub max_objects: u64,
    /// Largest single object, in decompressed bytes. Enforced as gix's allocation limit while
    /// indexing a pack, and from object headers before any tree or blob is read.
    pub max_object_size: u64,
    /// Longest delta chain in an imported pack. Checked right after indexing, from the new
    /// pack's entry headers; a pack over the limit is deleted again. (gix resolves chains
    /// iteratively while indexing, so a long chain costs time there but cannot overflow.)
    pub max_delta_chain: u32,
    /// Deepest directory nesting, in path components (a file `a/b/c` has depth 3).
    pub max_tree_depth: usize,
    /// Longest path from the tree root, in bytes; also the longest symlink target.
    pub max_path_len: usize,
    /// Most entries (files, links and directories) in the whole tree.
    pub max_tree_entries: usize,
    /// Most bytes of a pack stream, and most bytes of all files of a tree together.
    pub max_total_bytes: u64,
}

impl Default for GitLimits {
    fn default() -> Self {
        GitLimits {
            max_objects: 1_000_000,
            max_object_size: 256 << 20,
            // git's own cap on `pack.depth` is 4095; its default is 50.
            max_delta_chain: 4095,
            max_tree_depth: 128,
            max_path_len: 2048,
            max_tree_entries: 1_000_000,
            max_total_bytes: 8 << 30,
        }
    }
}

/// The local object store under `<state_dir>/objects` for one object format.
///
/// Holds a gix object database handle; it sees packs written by [`ObjectStore::import_pack`]
/// on its next lookup miss. The handle is `Send` but not `Sync`: one per thread (a clone shares
/// the database and has caches of its own).
#[derive(Clone)]
pub struct ObjectStore {
    objects_dir: PathBuf,
    pack_dir: PathBuf,
    kind: gix_hash::Kind,
    odb: gix_odb::HandleArc,
    /// Reads packed objects with plain reads (`pack_reader.rs`); gix only for loose ones.
    reader: RefCell<PackReader>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("objects_dir", &self.objects_dir)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// Opens the store at `objects_dir`, creating it and its `pack/` directory if missing.
    pub fn open(objects_dir: &Path, kind: gix_hash::Kind) -> Result<Self, GitError> {
        let pack_dir = objects_dir.join("pack");
        std::fs::create_dir_all(&pack_dir).map_err(|e| GitError::io(&pack_dir, e))?;
        let options = gix_odb::store::init::Options {
            // The slot map is fixed for the store's lifetime; leave room for many imports
            // between prunes.
            slots: gix_odb::store::init::Slots::AsNeededByDiskState { multiplier: 2.0, minimum: 64 },
            use_multi_pack_index: false,
            ..Default::default()
        };
        let store = gix_odb::Store::at_opts(objects_dir.to_owned(), kind, &mut std::iter::empty(), options)
            .map_err(|e| GitError::io(objects_dir, e))?;
        let reader = RefCell::new(PackReader::at(pack_dir.clone(), kind));
        Ok(ObjectStore {
            objects_dir: objects_dir.to_owned(),
            pack_dir,
            kind,
            odb: Arc::new(store).to_cache_arc(),
            reader,
        })
    }

    /// The object format of this store.
    pub fn kind(&self) -> gix_hash::Kind {
        self.kind
    }

    /// The `objects` directory this store lives in.
    pub fn objects_dir(&self) -> &Path {
        &self.objects_dir
    }

    /// Whether an object with this id is present (in any pack or loose).
    pub fn contains(&self, id: &oid) -> bool {
        id.kind() == self.kind && self.odb.exists(id)
    }

    /// The tree id of `commit`. Fails with [`GitError::MissingObject`] if it is absent or not
    /// a commit.
    pub fn commit_tree(&self, commit: &oid) -> Result<ObjectId, GitError> {
        let mut buf = Vec::new();
        let max = GitLimits::default().max_object_size;
        let data = self.read_object(commit, gix_object::Kind::Commit, max, None, &mut buf)?;
        gix_object::CommitRefIter::from_bytes(data, self.kind)
            .tree_id()
            .map_err(|e| GitError::malformed(format!("commit {commit}: {e}")))
    }

    /// Every pack index in `objects/pack`, opened, with its path.
    fn pack_indexes(&self) -> Result<Vec<(PathBuf, gix_pack::index::File)>, GitError> {
        pack_indexes(&self.pack_dir, self.kind)
    }

    /// The kind and size of `id`, without reading its content.
    fn header(&self, id: &oid) -> Result<Option<gix_object::Header>, GitError> {
        if id.kind() != self.kind {
            return Ok(None);
        }
        if let Some(header) = self.reader.borrow_mut().header(id)? {
            return Ok(Some(header));
        }
        self.odb.try_header(id).map_err(|e| GitError::Store { detail: format!("{id}: {e}") })
    }

    /// Checks that `id` is a present object of kind `expected` no larger than `max_size`,
    /// without reading it. `path` names the tree entry that refers to it, for errors.
    fn expect_object(
        &self,
        id: &oid,
        expected: gix_object::Kind,
        max_size: u64,
        path: Option<&BStr>,
    ) -> Result<u64, GitError> {
        check_header(id, self.header(id)?, expected, max_size, path)
    }

    /// Reads `id` into `buf` after [`Self::expect_object`]'s checks.
    fn read_object<'b>(
        &self,
        id: &oid,
        expected: gix_object::Kind,
        max_size: u64,
        path: Option<&BStr>,
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], GitError> {
        self.expect_object(id, expected, max_size, path)?;
        let missing =
            |found| GitError::MissingObject { id: id.to_owned(), expected, found, path: path.map(ToOwned::to_owned) };
        match self.reader.borrow_mut().read(id, max_size, buf)? {
            Some(kind) if kind == expected => return Ok(buf),
            Some(kind) => return Err(missing(Some(kind))),
            None => {}
        }
        match self.odb.try_find(id, buf) {
            Ok(Some(data)) if data.kind == expected => Ok(data.data),
            Ok(found) => Err(missing(found.map(|d| d.kind))),
            Err(e) => Err(GitError::Store { detail: format!("{id}: {e}") }),
        }
    }
}

/// Every pack index in `pack_dir`, opened, with its path. (An import's temporary files,
/// `.tmp-*-idx`, have no `.idx` extension.)
fn pack_indexes(pack_dir: &Path, kind: gix_hash::Kind) -> Result<Vec<(PathBuf, gix_pack::index::File)>, GitError> {
    let mut indexes = Vec::new();
    let listing = std::fs::read_dir(pack_dir).map_err(|e| GitError::io(pack_dir, e))?;
    for dirent in listing {
        let path = dirent.map_err(|e| GitError::io(pack_dir, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("idx") {
            continue;
        }
        let index = gix_pack::index::File::at(&path, kind)
            .map_err(|e| GitError::Store { detail: format!("{}: {e}", path.display()) })?;
        indexes.push((path, index));
    }
    Ok(indexes)
}

/// Checks that `header`, looked up for `id`, is an object of kind `expected` no larger than
/// `max_size`. `path` names the tree entry that refers to it, for errors.
fn check_header(
    id: &oid,
    header: Option<gix_object::Header>,
    expected: gix_object::Kind,
    max_size: u64,
    path: Option<&BStr>,
) -> Result<u64, GitError> {
    let missing =
        |found| GitError::MissingObject { id: id.to_owned(), expected, found, path: path.map(ToOwned::to_owned) };
    let header = header.ok_or_else(|| missing(None))?;
    if header.kind != expected {
        return Err(missing(Some(header.kind)));
    }
    if header.size > max_size {
        let at = match path {
            Some(path) => format!("{path:?} ({id})"),
            None => id.to_string(),
        };
        return Err(GitError::size(Limit::ObjectSize, max_size, Some(header.size), at));
    }
    Ok(header.size)
}
