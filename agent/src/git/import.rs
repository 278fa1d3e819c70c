//! Importing an untrusted pack stream (the bytes after a git bundle header) into the store.
//!
//! [`super::pack_stream`] copies the stream into a temporary pack file entry by entry,
//! checking each entry's sizes, hashing whole objects and appending thin-pack bases from the
//! store; [`super::pack_index`] then resolves the deltas from that file (measuring their
//! chains) and writes the `.idx`. Around them this module adds what a device needs from
//! untrusted input:
//!
//! * prerequisites are checked first, so a delta payload for another base fails with a clear
//!   [`GitError::MissingPrerequisite`] instead of gix's "base object could not be found";
//! * the pack header is read and its object count checked before any entry is;
//! * only a pack that passed every check is fsynced and renamed into `objects/pack` (pack
//!   first, then its index: the object database finds packs by their index). The temporary
//!   files (`.tmp-*`) are removed on failure, and by [`ObjectStore::remove_interrupted_imports`]
//!   after a crash.

use std::fs::File;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use gix_hash::ObjectId;

use super::error::{GitError, Limit};
use super::pack_index::{resolve_deltas, write_index};
use super::pack_stream::{PackStream, StreamedPack, PACK_HEADER};
use super::{GitLimits, ObjectStore};

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The `.pack` file (new, or the same pack already present); `None` for an empty pack.
    pub pack_path: Option<PathBuf>,
    /// Its `.idx` file.
    pub index_path: Option<PathBuf>,
    /// Objects declared by the pack header.
    pub objects_in_stream: u32,
    /// Objects in the written pack: the stream's plus the thin-pack bases copied in and the
    /// blobs made by the patch section.
    pub objects_written: u32,
    /// Bytes of the pack stream.
    pub bytes_read: u64,
    /// Longest delta chain in the written pack.
    pub longest_delta_chain: u32,
}

impl ObjectStore {
    /// Imports a pack stream (the bytes after a git bundle header) and the patch section
    /// that may follow it.
    ///
    /// `prerequisites` must all be commits in this store, else
    /// [`GitError::MissingPrerequisite`]. Thin-pack bases are resolved from this store and
    /// copied into the new pack, and so are the blobs the patch section makes from blobs of
    /// this store, so every pack written here is self-contained. Enforces
    /// `limits` (object count from the header before reading objects, object size, stream
    /// size, delta-chain length); refuses truncated packs and junk after the pack
    /// ([`GitError::Malformed`]). Prerequisites present do not prove every object the new
    /// tree needs is present: [`super::validate_tree`] does.
    pub fn import_pack(
        &self,
        pack: &mut dyn BufRead,
        prerequisites: &[ObjectId],
        limits: &GitLimits,
    ) -> Result<ImportOutcome, GitError> {
        for id in prerequisites {
            match self.header(id)? {
                Some(h) if h.kind == gix_object::Kind::Commit => {}
                _ => return Err(GitError::MissingPrerequisite { id: *id }),
            }
        }

        let mut header = [0; PACK_HEADER];
        pack.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => GitError::malformed("pack stream ends inside the pack header"),
            _ => GitError::PackRead { source: e },
        })?;
        let (_version, declared) =
            gix_pack::data::header::decode(&header).map_err(|e| GitError::malformed(format!("pack header: {e}")))?;
        if u64::from(declared) > limits.max_objects {
            return Err(GitError::size(Limit::Objects, limits.max_objects, Some(declared.into()), "pack header"));
        }

        let temp = NewPack::temporary(&self.pack_dir);
        let streamed = PackStream::create(pack, &temp.pack, header, declared, limits, self)?.run()?;
        let StreamedPack { entries, checksum, bytes_read, appended, patched } = streamed;
        if entries.is_empty() {
            return Ok(ImportOutcome {
                pack_path: None,
                index_path: None,
                objects_in_stream: declared,
                objects_written: 0,
                bytes_read,
                longest_delta_chain: 0,
            });
        }
        let data = gix_pack::data::File::at(&temp.pack, self.kind)
            .map_err(|e| GitError::Store { detail: format!("{}: {e}", temp.pack.display()) })?;
        let resolved = resolve_deltas(&data, &entries, limits.max_object_size, limits.max_delta_chain)?;
        drop(data);
        write_index(&temp.index, &entries, &resolved.ids, &checksum)?;
        let longest_delta_chain = resolved.longest_delta_chain;
        let objects_written = entries.len() as u32;
        for path in [&temp.pack, &temp.index] {
            File::open(path).and_then(|f| f.sync_all()).map_err(|e| GitError::io(path, e))?;
        }
        let pack_path = self.pack_dir.join(format!("pack-{}.pack", checksum.to_hex()));
        let index_path = pack_path.with_extension("idx");
        if !index_path.is_file() {
            for (from, to) in [(&temp.pack, &pack_path), (&temp.index, &index_path)] {
                std::fs::rename(from, to).map_err(|e| GitError::io(to, e))?;
            }
            File::open(&self.pack_dir).and_then(|d| d.sync_all()).map_err(|e| GitError::io(&self.pack_dir, e))?;
        }
        tracing::info!(
            objects = objects_written,
            declared,
            thin_bases = appended - patched,
            patched,
            bytes = bytes_read,
            longest_delta_chain,
            pack = %pack_path.display(),
            "imported pack"
        );
        Ok(ImportOutcome {
            pack_path: Some(pack_path),
            index_path: Some(index_path),
            objects_in_stream: declared,
            objects_written,
            bytes_read,
            longest_delta_chain,
        })
    }
}

/// The temporary files of a pack being imported, removed when dropped unless renamed away.
struct NewPack {
    pack: PathBuf,
    index: PathBuf,
}

impl NewPack {
    fn temporary(pack_dir: &Path) -> Self {
        let nonce = crate::fsutil::nonce();
        NewPack { pack: pack_dir.join(format!(".tmp-{nonce}-pack")), index: pack_dir.join(format!(".tmp-{nonce}-idx")) }
    }
}

impl Drop for NewPack {
    fn drop(&mut self) {
        for path in [&self.index, &self.pack] {
            match std::fs::remove_file(path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), %err, "could not remove a temporary pack file");
                }
                _ => {}
            }
        }
    }
}
