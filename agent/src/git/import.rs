//! Importing an untrusted pack stream (the bytes after a git bundle header) into the store.
//!
//! [`super::pack_stream`] copies the stream into a temporary pack file entry by entry,
//! checking each entry's sizes and appending thin-pack bases from the store; gix's index
//! writer (`gix_pack::index::write_data_iter_to_stream`) then resolves every object from that
//! file and writes the `.idx`. Around them this module adds what a device needs from
//! untrusted input:
//!
//! * prerequisites are checked first, so a delta payload for another base fails with a clear
//!   [`GitError::MissingPrerequisite`] instead of gix's "base object could not be found";
//! * the pack header is read and its object count checked before any entry is;
//! * delta chains of the new pack are measured from its entry headers;
//! * only a pack that passed every check is fsynced and renamed into `objects/pack` (pack
//!   first, then its index: the object database finds packs by their index). The temporary
//!   files (`.tmp-*`) are removed on failure, and by [`ObjectStore::remove_interrupted_imports`]
//!   after a crash.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix_hash::ObjectId;
use gix_pack::data::entry::Header;

use super::error::{GitError, Limit};
use super::pack_stream::{PackStream, PACK_HEADER};
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
        let (version, declared) =
            gix_pack::data::header::decode(&header).map_err(|e| GitError::malformed(format!("pack header: {e}")))?;
        if u64::from(declared) > limits.max_objects {
            return Err(GitError::size(Limit::Objects, limits.max_objects, Some(declared.into()), "pack header"));
        }

        let temp = NewPack::temporary(&self.pack_dir);
        let mut stream = PackStream::create(pack, &temp.pack, header, declared, limits, &self.odb)?;
        let mut index_file = BufWriter::new(
            File::options().write(true).create_new(true).open(&temp.index).map_err(|e| GitError::io(&temp.index, e))?,
        );
        let kind = self.kind;
        let alloc_limit = usize::try_from(limits.max_object_size).unwrap_or(usize::MAX);
        let written = gix_pack::index::write_data_iter_to_stream(
            gix_pack::index::Version::default(),
            || {
                let pack = gix_pack::data::File::at(&temp.pack, kind)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}")))?
                    .with_alloc_limit_bytes(Some(alloc_limit));
                Ok((entry_bytes, pack))
            },
            &mut stream,
            None,
            &mut gix_utils::progress::Discard,
            &mut index_file,
            &AtomicBool::new(false),
            kind,
            Some(alloc_limit),
            version,
        );
        let written = match written {
            Ok(written) => written,
            Err(err) => return Err(stream.take_failure().unwrap_or_else(|| classify_failure(err, limits))),
        };
        stream.finish()?;
        let bytes_read = stream.bytes_read();
        let appended = stream.appended();
        let patched = stream.patched();
        drop(stream);
        if written.num_objects == 0 {
            return Ok(ImportOutcome {
                pack_path: None,
                index_path: None,
                objects_in_stream: declared,
                objects_written: 0,
                bytes_read,
                longest_delta_chain: 0,
            });
        }
        index_file.flush().map_err(|e| GitError::io(&temp.index, e))?;
        let longest_delta_chain = longest_delta_chain(&temp.index, &temp.pack, self.kind, limits.max_delta_chain)?;
        for path in [&temp.pack, &temp.index] {
            File::open(path).and_then(|f| f.sync_all()).map_err(|e| GitError::io(path, e))?;
        }
        let pack_path = self.pack_dir.join(format!("pack-{}.pack", written.data_hash.to_hex()));
        let index_path = pack_path.with_extension("idx");
        if !index_path.is_file() {
            for (from, to) in [(&temp.pack, &pack_path), (&temp.index, &index_path)] {
                std::fs::rename(from, to).map_err(|e| GitError::io(to, e))?;
            }
            File::open(&self.pack_dir).and_then(|d| d.sync_all()).map_err(|e| GitError::io(&self.pack_dir, e))?;
        }
        tracing::info!(
            objects = written.num_objects,
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
            objects_written: written.num_objects,
            bytes_read,
            longest_delta_chain,
        })
    }
}

/// The bytes of one entry, for gix's index writer.
fn entry_bytes(range: gix_pack::data::EntryRange, pack: &gix_pack::data::File) -> Option<&[u8]> {
    pack.entry_slice(range)
}

/// Maps a failure of gix's index writer to the error a person can act on.
fn classify_failure(err: gix_error::Error, limits: &GitLimits) -> GitError {
    // The most specific cause reads best ("Entry too large to fit in memory"); gix's own
    // alternate form prints diagnostics as structs.
    let detail = err.probable_cause().to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            if !matches!(io.kind(), UnexpectedEof | InvalidData | InvalidInput | Other) {
                return GitError::io(Path::new("objects/pack"), io::Error::new(io.kind(), detail));
            }
        }
        source = cause.source();
    }
    if err.is_resource_exhausted() {
        GitError::size(Limit::ObjectSize, limits.max_object_size, None, format!("pack: {detail}"))
    } else if err.is_not_found() {
        GitError::ThinBaseMissing { detail }
    } else {
        GitError::Malformed { detail }
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

/// Longest delta chain of the pack at `data` (with index `index`), failing above `max`.
fn longest_delta_chain(index: &Path, data: &Path, kind: gix_hash::Kind, max: u32) -> Result<u32, GitError> {
    let index = gix_pack::index::File::at(index, kind)
        .map_err(|e| GitError::Store { detail: format!("{}: {e}", index.display()) })?;
    let pack = gix_pack::data::File::at(data, kind)
        .map_err(|e| GitError::Store { detail: format!("{}: {e}", data.display()) })?;
    let mut depth_at: HashMap<u64, u32> = HashMap::with_capacity(index.num_objects() as usize);
    let mut chain = Vec::new();
    let mut longest = 0;
    for start in index.sorted_offsets() {
        chain.clear();
        let mut offset = start;
        let base_depth = loop {
            if let Some(depth) = depth_at.get(&offset) {
                break *depth;
            }
            if chain.len() > max as usize {
                return Err(GitError::size(Limit::DeltaChain, max.into(), None, "the imported pack"));
            }
            let entry = pack.entry(offset).map_err(|e| GitError::malformed(format!("pack entry at {offset}: {e}")))?;
            let base = match entry.header {
                Header::OfsDelta { base_distance } => entry.checked_base_pack_offset(base_distance),
                Header::RefDelta { base_id } => index.lookup(base_id).map(|i| index.pack_offset_at_index(i)),
                _ => {
                    depth_at.insert(offset, 0);
                    break 0;
                }
            };
            chain.push(offset);
            offset = base.ok_or_else(|| GitError::malformed(format!("delta at {offset} has no base in its pack")))?;
        };
        for (steps, offset) in chain.iter().rev().enumerate() {
            let depth = base_depth.saturating_add(steps as u32 + 1);
            if depth > max {
                return Err(GitError::size(Limit::DeltaChain, max.into(), Some(depth.into()), "the imported pack"));
            }
            longest = longest.max(depth);
            depth_at.insert(*offset, depth);
        }
    }
    Ok(longest)
}
