//! Dropping packs no kept release needs, without repacking.
//!
//! Every pack this store holds was written by [`ObjectStore::import_pack`], which completes
//! thin packs with copies of their bases, so each pack can be read on its own. Pruning
//! therefore works pack by pack: collect every object reachable from the `keep` commits,
//! keep a set of packs that together hold all of them (greedily, packs holding the most
//! needed objects first), and delete the rest. A pack is never split, so objects of dropped
//! releases that share a pack with needed ones stay until that pack goes too. If any needed
//! object is in no pack and not loose, nothing is deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use gix_hash::ObjectId;
use gix_object::TreeRefIter;

use super::error::GitError;
use super::{GitLimits, ObjectStore};

/// What [`ObjectStore::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Packs still needed.
    pub packs_kept: usize,
    /// Packs deleted.
    pub packs_removed: usize,
    /// Bytes of the deleted files (`.pack`, `.idx` and companions).
    pub bytes_removed: u64,
}

/// Files that may sit beside a pack's `.idx` and go with it.
const PACK_COMPANIONS: [&str; 5] = ["pack", "keep", "rev", "bitmap", "mtimes"];

impl ObjectStore {
    /// Deletes the packs not needed to reach any of the `keep` commits (their commit, tree and
    /// every tree and blob below). See the module docs for the approach.
    pub fn prune(&self, keep: &[ObjectId]) -> Result<PruneOutcome, GitError> {
        let needed: Vec<ObjectId> = self.reachable(keep)?.into_iter().collect();

        let mut packs = Vec::new();
        for (path, index) in self.pack_indexes()? {
            let holds: Vec<usize> = (0..needed.len()).filter(|i| index.lookup(needed[*i]).is_some()).collect();
            packs.push((path, holds));
        }
        packs.sort_by_key(|(_, holds)| std::cmp::Reverse(holds.len()));

        let mut covered = vec![false; needed.len()];
        let mut remove = Vec::new();
        let mut kept = 0;
        for (path, holds) in packs {
            if holds.iter().any(|i| !covered[*i]) {
                holds.iter().for_each(|i| covered[*i] = true);
                kept += 1;
            } else {
                remove.push(path);
            }
        }
        for (id, _) in needed.iter().zip(&covered).filter(|(_, c)| !**c) {
            if !self.loose_path(id).is_file() {
                return Err(GitError::MissingObject {
                    id: *id,
                    expected: gix_object::Kind::Blob,
                    found: None,
                    path: None,
                });
            }
        }

        let mut outcome = PruneOutcome { packs_kept: kept, ..Default::default() };
        for idx in remove {
            outcome.bytes_removed += remove_pack(&idx)?;
            outcome.packs_removed += 1;
        }
        tracing::info!(kept, removed = outcome.packs_removed, bytes = outcome.bytes_removed, "pruned packs");
        Ok(outcome)
    }

    /// Removes what an interrupted import leaves in `objects/pack`: gix's temporary files
    /// (`.tmp*`) and packs whose `.keep` file is still there (the import stopped before its
    /// checks finished, so the pack is not trusted). Returns how many files and packs went.
    /// Call it only while no import runs (under the apply lock), e.g. when the agent starts.
    pub fn remove_interrupted_imports(&self) -> Result<usize, GitError> {
        let mut removed = 0;
        let listing = std::fs::read_dir(&self.pack_dir).map_err(|e| GitError::io(&self.pack_dir, e))?;
        for dirent in listing {
            let path = dirent.map_err(|e| GitError::io(&self.pack_dir, e))?.path();
            let name = path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
            if name.starts_with(b".tmp") {
                std::fs::remove_file(&path).map_err(|e| GitError::io(&path, e))?;
                removed += 1;
            } else if path.extension().and_then(|e| e.to_str()) == Some("keep") {
                remove_pack(&path.with_extension("idx"))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::warn!(removed, "removed leftovers of an interrupted pack import");
        }
        Ok(removed)
    }

    /// Every object id reachable from the commits `keep`.
    fn reachable(&self, keep: &[ObjectId]) -> Result<HashSet<ObjectId>, GitError> {
        let max = GitLimits::default().max_object_size;
        let mut seen = HashSet::new();
        let mut trees = Vec::new();
        for commit in keep {
            let tree = self.commit_tree(commit)?;
            seen.insert(*commit);
            if seen.insert(tree) {
                trees.push(tree);
            }
        }
        let mut buf = Vec::new();
        while let Some(tree) = trees.pop() {
            let data = self.read_object(&tree, gix_object::Kind::Tree, max, None, &mut buf)?;
            for entry in TreeRefIter::from_bytes(data, self.kind) {
                let entry = entry.map_err(|e| GitError::malformed(format!("tree {tree}: {e}")))?;
                if entry.mode.is_commit() {
                    continue;
                }
                let id = entry.oid.to_owned();
                if seen.insert(id) && entry.mode.is_tree() {
                    trees.push(id);
                }
            }
        }
        Ok(seen)
    }

    fn loose_path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex().to_string();
        self.objects_dir.join(&hex[..2]).join(&hex[2..])
    }
}

/// Removes a pack, index first so no reader finds an index without its pack; returns the
/// bytes freed.
fn remove_pack(idx: &Path) -> Result<u64, GitError> {
    let mut freed = 0;
    let mut remove = |path: &Path| -> Result<(), GitError> {
        match std::fs::metadata(path) {
            Ok(meta) => freed += meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(GitError::io(path, e)),
        }
        std::fs::remove_file(path).map_err(|e| GitError::io(path, e))
    };
    remove(idx)?;
    for ext in PACK_COMPANIONS {
        remove(&idx.with_extension(ext))?;
    }
    tracing::debug!(pack = %idx.display(), "removed pack");
    Ok(freed)
}
