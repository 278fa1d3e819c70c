//! Whole-tree validation before anything is written (DESIGN "Apply", step 3).
//!
//! [`validate_tree`] walks every tree object the snapshot reaches and refuses:
//!
//! * names gix_validate forbids with all protections on (see [`super::names`]), a NUL, names
//!   longer than 255 bytes, a root-level `.ferry-slot` (the agent's own slot record), and
//!   two entries of one tree with the same name (which is also how a symlink `a` and a file
//!   `a/f` appear in a tree: a link and a directory both named `a`). Names that differ
//!   only in case (`A` and `a`) are allowed: slots live on case-sensitive Linux file
//!   systems;
//! * modes other than 100644, 100755, 120000 and 040000 (gitlinks, 160000, included);
//! * symlinks whose target is absolute, has a `\`, a drive prefix or a `.git` component, or
//!   steps above the root when resolved through the tree's other links;
//! * more entries, deeper nesting, longer paths, larger objects or more total bytes than
//!   [`GitLimits`] allows (reported as [`Limit`]s, reason `size-exceeded`);
//! * objects that are absent or of the wrong kind: blobs are checked by header, so a tree
//!   that validates is also complete.
//!
//! The result, [`ValidatedTree`], has private fields and no constructor: checkout and drift
//! comparison take it, so nothing unvalidated reaches a slot.

use gix_hash::{oid, ObjectId};
use gix_object::bstr::{BStr, BString, ByteSlice};
use gix_object::TreeRefIter;

use super::error::{GitError, Limit, PathProblem, SymlinkProblem};
use super::names::{self, NodeKind, ResolveError, Trie, ROOT};
use super::pack_reader::PackReader;
use super::{check_header, GitLimits, ObjectStore};

/// The slot record the agent writes at the root of every slot.
pub(crate) const SLOT_RECORD: &[u8] = b".ferry-slot";
/// Longest file name most Linux file systems accept (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;
/// Work units (bytes and components) all symlink resolutions of one tree may spend.
const SYMLINK_BUDGET: u64 = 1 << 26;

/// A tree that passed [`validate_tree`]; the only input [`super::checkout`] accepts.
#[derive(Debug, Clone)]
pub struct ValidatedTree {
    id: ObjectId,
    entries: Vec<Entry>,
    files: u64,
    symlinks: u64,
    dirs: u64,
    total_bytes: u64,
}

impl ValidatedTree {
    /// The tree's object id.
    pub fn id(&self) -> &oid {
        &self.id
    }

    /// Regular files in the tree.
    pub fn files(&self) -> u64 {
        self.files
    }

    /// Symbolic links in the tree.
    pub fn symlinks(&self) -> u64 {
        self.symlinks
    }

    /// Directories in the tree (the root not counted).
    pub fn dirs(&self) -> u64 {
        self.dirs
    }

    /// Bytes of all regular files together.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// All entries, sorted by path bytes (so a directory comes before its contents).
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry at `path`, found by binary search in the sorted entries (a validated tree
    /// holds each path once).
    pub(crate) fn entry(&self, path: &BStr) -> Option<&Entry> {
        let at = self.entries.binary_search_by(|e| e.path.as_bstr().cmp(path)).ok()?;
        Some(&self.entries[at])
    }
}

/// One validated entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Slash-separated path from the root.
    pub path: BString,
    /// The tree or blob id.
    pub id: ObjectId,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File { executable: bool, size: u64 },
    Symlink { target: BString },
}

/// Walks the whole tree `tree` and rejects what DESIGN step 3 forbids; see the module docs.
pub fn validate_tree(store: &ObjectStore, tree: &oid, limits: &GitLimits) -> Result<ValidatedTree, GitError> {
    let mut walk = Walk {
        store,
        reader: PackReader::new(store),
        limits,
        trie: Trie::new(),
        entries: Vec::new(),
        links: Vec::new(),
        total_bytes: 0,
        link_buf: Vec::new(),
    };
    let mut pending: Vec<(ObjectId, BString, usize, usize)> = vec![(tree.to_owned(), BString::default(), ROOT, 0)];
    let mut buf = Vec::new();
    while let Some((id, dir, node, depth)) = pending.pop() {
        let at = (!dir.is_empty()).then_some(dir.as_bstr());
        let data = store.read_object(&id, gix_object::Kind::Tree, limits.max_object_size, at, &mut buf)?;
        for entry in TreeRefIter::from_bytes(data, store.kind()) {
            let entry = entry.map_err(|e| GitError::malformed(format!("tree {id} at {dir:?}: {e}")))?;
            if let Some((child, path)) = walk.entry(dir.as_bstr(), node, depth, entry)? {
                pending.push((entry.oid.to_owned(), path, child, depth + 1));
            }
        }
    }

    let mut budget = SYMLINK_BUDGET;
    for (node, index) in &walk.links {
        if let Err(err) = walk.trie.resolve(*node, &mut budget) {
            let entry = &walk.entries[*index];
            return Err(match err {
                ResolveError::Unsafe(problem) => unsafe_symlink(entry.path.as_bstr(), &entry.kind, problem),
                ResolveError::Budget => {
                    GitError::size(Limit::SymlinkResolution, SYMLINK_BUDGET, None, format!("{:?}", entry.path))
                }
            });
        }
    }

    let mut entries = walk.entries;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let count = |f: fn(&EntryKind) -> bool| entries.iter().filter(|e| f(&e.kind)).count() as u64;
    Ok(ValidatedTree {
        id: tree.to_owned(),
        files: count(|k| matches!(k, EntryKind::File { .. })),
        symlinks: count(|k| matches!(k, EntryKind::Symlink { .. })),
        dirs: count(|k| matches!(k, EntryKind::Dir)),
        total_bytes: walk.total_bytes,
        entries,
    })
}

fn unsafe_symlink(path: &BStr, kind: &EntryKind, problem: SymlinkProblem) -> GitError {
    let target = match kind {
        EntryKind::Symlink { target } => target.clone(),
        _ => BString::default(),
    };
    GitError::UnsafeSymlink { path: path.to_owned(), target, problem }
}

/// State of one validation walk.
struct Walk<'a> {
    store: &'a ObjectStore,
    /// Blob headers, read from the packs without mapping them.
    reader: PackReader,
    limits: &'a GitLimits,
    trie: Trie,
    entries: Vec<Entry>,
    /// Symlinks: trie node and index into `entries`.
    links: Vec<(usize, usize)>,
    total_bytes: u64,
    link_buf: Vec<u8>,
}

impl Walk<'_> {
    /// The size of blob `id`, at `path`, after checking that it is present and a blob of at
    /// most `max_size` bytes.
    fn expect_blob(&mut self, id: &oid, max_size: u64, path: &BStr) -> Result<u64, GitError> {
        let header = match self.reader.header(id)? {
            Some(header) => Some(header),
            None => self.store.header(id)?,
        };
        check_header(id, header, gix_object::Kind::Blob, max_size, Some(path))
    }

    /// Checks one entry of the directory `dir` (trie node `node`, nesting `depth`); returns
    /// the trie node and path of a subdirectory still to walk.
    fn entry(
        &mut self,
        dir: &BStr,
        node: usize,
        depth: usize,
        entry: gix_object::tree::EntryRef<'_>,
    ) -> Result<Option<(usize, BString)>, GitError> {
        let limits = self.limits;
        let name = entry.filename;
        let mut path = BString::from(Vec::with_capacity(dir.len() + 1 + name.len()));
        if !dir.is_empty() {
            path.extend_from_slice(dir);
            path.push(b'/');
        }
        path.extend_from_slice(name);

        if self.entries.len() >= limits.max_tree_entries {
            let max = limits.max_tree_entries as u64;
            return Err(GitError::size(Limit::TreeEntries, max, None, format!("{path:?}")));
        }
        let mode = entry.mode.value();
        let unsafe_path = |problem| GitError::UnsafePath { path: path.clone(), problem };
        names::check_name(name, mode == 0o120000).map_err(unsafe_path)?;
        if node == ROOT && name == SLOT_RECORD {
            return Err(unsafe_path(PathProblem::Reserved));
        }
        let too_long = |limit, max: usize, found: usize| {
            GitError::size(limit, max as u64, Some(found as u64), format!("{path:?}"))
        };
        if name.len() > MAX_NAME_LEN {
            return Err(too_long(Limit::NameLength, MAX_NAME_LEN, name.len()));
        }
        if path.len() > limits.max_path_len {
            return Err(too_long(Limit::PathLength, limits.max_path_len, path.len()));
        }
        if depth + 1 > limits.max_tree_depth {
            return Err(too_long(Limit::TreeDepth, limits.max_tree_depth, depth + 1));
        }

        let blob = gix_object::Kind::Blob;
        let kind = match mode {
            0o040000 => EntryKind::Dir,
            0o100644 | 0o100755 => {
                let size = self.expect_blob(entry.oid, limits.max_object_size, path.as_bstr())?;
                self.total_bytes = self.total_bytes.saturating_add(size);
                if self.total_bytes > limits.max_total_bytes {
                    let (max, found) = (limits.max_total_bytes, self.total_bytes);
                    return Err(GitError::size(Limit::TotalBytes, max, Some(found), format!("{path:?}")));
                }
                EntryKind::File { executable: mode == 0o100755, size }
            }
            0o120000 => {
                let size = self.expect_blob(entry.oid, u64::MAX, path.as_bstr())?;
                if size > limits.max_path_len as u64 {
                    let at = format!("symlink {path:?}");
                    return Err(GitError::size(Limit::PathLength, limits.max_path_len as u64, Some(size), at));
                }
                let target =
                    self.store.read_object(entry.oid, blob, u64::MAX, Some(path.as_bstr()), &mut self.link_buf)?;
                let target = BString::from(target);
                if let Err(problem) = names::check_target_text(&target) {
                    return Err(GitError::UnsafeSymlink { path, target, problem });
                }
                EntryKind::Symlink { target }
            }
            0o160000 => return Err(unsafe_path(PathProblem::Submodule)),
            other => return Err(unsafe_path(PathProblem::Mode(other))),
        };

        let node_kind = match &kind {
            EntryKind::Dir => NodeKind::Dir(Default::default()),
            EntryKind::File { .. } => NodeKind::File,
            EntryKind::Symlink { target } => NodeKind::Symlink(target.clone()),
        };
        let child = match self.trie.add(node, name, node_kind) {
            Ok(child) => child,
            Err(existing) => return Err(self.duplicate(path, kind, existing)),
        };
        let subdir = match &kind {
            EntryKind::Dir => Some((child, path.clone())),
            EntryKind::Symlink { .. } => {
                self.links.push((child, self.entries.len()));
                None
            }
            EntryKind::File { .. } => None,
        };
        self.entries.push(Entry { path, id: entry.oid.to_owned(), kind });
        Ok(subdir)
    }

    /// The error for a second entry named like an earlier one (trie node `existing`).
    fn duplicate(&self, path: BString, kind: EntryKind, existing: usize) -> GitError {
        match (&kind, self.trie.kind(existing)) {
            (EntryKind::Symlink { .. }, NodeKind::Dir(_)) => {
                unsafe_symlink(path.as_bstr(), &kind, SymlinkProblem::UsedAsDirectory)
            }
            (EntryKind::Dir, NodeKind::Symlink(target)) => {
                GitError::UnsafeSymlink { path, target: target.clone(), problem: SymlinkProblem::UsedAsDirectory }
            }
            _ => GitError::UnsafePath { path, problem: PathProblem::Duplicate },
        }
    }
}
