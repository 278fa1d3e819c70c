//! Importing an untrusted pack stream (the bytes after a git bundle header) into the store.
//!
//! gix does the heavy lifting (`gix_pack::Bundle::write_to_directory`, with the store as the
//! thin-pack base lookup). Around it this module adds what a device needs from untrusted
//! input:
//!
//! * prerequisites are checked first, so a delta payload for another base fails with a clear
//!   [`GitError::MissingPrerequisite`] instead of gix's "base object could not be found";
//! * the pack header is peeked and its object count checked before gix reads anything;
//! * the stream is capped at `max_total_bytes` and each object at `max_object_size` (gix's
//!   allocation limit);
//! * junk after the pack is refused. gix wraps the input in its own `BufReader`, which may
//!   read ahead past the pack's end, so [`PackInput`] serves bytes one at a time once fewer
//!   than [`TAIL`] bytes remain: whatever gix has not consumed when it returns is then still
//!   in our hands, and any byte left over means junk;
//! * delta chains of the new pack are measured from its entry headers;
//! * the new `.pack` and `.idx` are fsynced (gix only renames them into place), then the
//!   `.keep` file gix leaves beside the pack is removed.
//!
//! A pack that fails any check after it was written is deleted again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix_hash::ObjectId;
use gix_pack::data::entry::Header;

use super::error::{GitError, Limit};
use super::{GitLimits, ObjectStore};

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The new `.pack` file; `None` for an empty pack, or when the same pack was already
    /// present.
    pub pack_path: Option<PathBuf>,
    /// Its `.idx` file.
    pub index_path: Option<PathBuf>,
    /// Objects declared by the pack header.
    pub objects_in_stream: u32,
    /// Objects in the written pack: the stream's plus the thin-pack bases copied in.
    pub objects_written: u32,
    /// Bytes of the pack stream.
    pub bytes_read: u64,
    /// Longest delta chain in the written pack.
    pub longest_delta_chain: u32,
}

/// Bytes near the end of the stream that are handed out one at a time.
const TAIL: usize = 64;
/// Most bytes pulled from the source reader at once.
const CHUNK: usize = 64 << 10;
/// Size of a pack header: `PACK`, version, object count.
const PACK_HEADER: usize = 12;

impl ObjectStore {
    /// Imports a pack stream (the bytes after a git bundle header).
    ///
    /// `prerequisites` must all be commits in this store, else
    /// [`GitError::MissingPrerequisite`]. Thin-pack bases are resolved from this store and
    /// copied into the new pack, so every pack written here is self-contained. Enforces
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

        let mut input = PackInput::new(pack, limits.max_total_bytes);
        let header = input.peek_header()?;
        let (_version, declared) =
            gix_pack::data::header::decode(&header).map_err(|e| GitError::malformed(format!("pack header: {e:#}")))?;
        if u64::from(declared) > limits.max_objects {
            return Err(GitError::size(Limit::Objects, limits.max_objects, Some(declared.into()), "pack header"));
        }

        let options = gix_pack::bundle::write::Options {
            iteration_mode: gix_pack::data::input::Mode::Verify,
            alloc_limit_bytes: Some(usize::try_from(limits.max_object_size).unwrap_or(usize::MAX)),
            ..Default::default()
        };
        let written = gix_pack::Bundle::write_to_directory(
            &mut input,
            Some(&self.pack_dir),
            &mut gix_utils::progress::Discard,
            &AtomicBool::new(false),
            Some(&self.odb),
            self.kind,
            options,
        );
        let written = match written {
            Ok(written) => written,
            Err(err) => return Err(input.classify_failure(err, limits)),
        };
        // Files this call created (not a pack that was already present), to undo on failure.
        let created = NewPack {
            pack: written.keep_path.as_ref().and(written.data_path.clone()),
            index: written.keep_path.as_ref().and(written.index_path.clone()),
            keep: written.keep_path.clone(),
        };

        let checked = input.ensure_at_end().and_then(|()| match (&written.index_path, &written.data_path) {
            (Some(index), Some(data)) => longest_delta_chain(index, data, self.kind, limits.max_delta_chain),
            _ => Ok(0),
        });
        let longest_delta_chain = match checked {
            Ok(longest) => longest,
            Err(err) => {
                created.remove();
                return Err(err);
            }
        };
        // gix renames the files into place without syncing them; the journal will record
        // this release as imported, so make the pack durable first.
        for path in [&written.data_path, &written.index_path].into_iter().flatten() {
            File::open(path).and_then(|f| f.sync_all()).map_err(|e| GitError::io(path, e))?;
        }
        if let Some(keep) = &written.keep_path {
            std::fs::remove_file(keep).map_err(|e| GitError::io(keep, e))?;
        }
        File::open(&self.pack_dir).and_then(|d| d.sync_all()).map_err(|e| GitError::io(&self.pack_dir, e))?;
        tracing::info!(
            objects = written.index.num_objects,
            declared,
            bytes = input.served,
            longest_delta_chain,
            pack = ?written.data_path,
            "imported pack"
        );
        Ok(ImportOutcome {
            pack_path: written.data_path,
            index_path: written.index_path,
            objects_in_stream: declared,
            objects_written: written.index.num_objects,
            bytes_read: input.served,
            longest_delta_chain,
        })
    }
}

/// Files of a freshly written pack, removed again if a later check fails.
struct NewPack {
    pack: Option<PathBuf>,
    index: Option<PathBuf>,
    keep: Option<PathBuf>,
}

impl NewPack {
    fn remove(&self) {
        // The index goes first so no reader finds an index whose pack is gone.
        for path in [&self.index, &self.pack, &self.keep].into_iter().flatten() {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), %err, "could not remove rejected pack file");
            }
        }
    }
}

/// Longest delta chain of the pack at `data` (with index `index`), failing above `max`.
fn longest_delta_chain(index: &Path, data: &Path, kind: gix_hash::Kind, max: u32) -> Result<u32, GitError> {
    let index = gix_pack::index::File::at(index, kind)
        .map_err(|e| GitError::Store { detail: format!("{}: {e:#}", index.display()) })?;
    let pack = gix_pack::data::File::at(data, kind)
        .map_err(|e| GitError::Store { detail: format!("{}: {e:#}", data.display()) })?;
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
                return Err(GitError::size(Limit::DeltaChain, max.into(), None, data.display().to_string()));
            }
            let entry =
                pack.entry(offset).map_err(|e| GitError::malformed(format!("pack entry at {offset}: {e:#}")))?;
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
                return Err(GitError::size(
                    Limit::DeltaChain,
                    max.into(),
                    Some(depth.into()),
                    data.display().to_string(),
                ));
            }
            longest = longest.max(depth);
            depth_at.insert(*offset, depth);
        }
    }
    Ok(longest)
}

/// The pack stream as gix sees it: capped in size, and never read ahead past its end.
///
/// It keeps more than [`TAIL`] bytes buffered ahead of what it has handed out, so it knows
/// when the source is about to end; from then on it hands out one byte per call. gix's own
/// `BufReader` can then hold at most one unconsumed byte, and only while it still needs it.
struct PackInput<'a> {
    source: &'a mut dyn BufRead,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    served: u64,
    pulled: u64,
    max_bytes: u64,
    exceeded: bool,
    source_error: Option<io::Error>,
}

impl<'a> PackInput<'a> {
    fn new(source: &'a mut dyn BufRead, max_bytes: u64) -> Self {
        PackInput {
            source,
            buf: Vec::with_capacity(CHUNK + TAIL),
            pos: 0,
            eof: false,
            served: 0,
            pulled: 0,
            max_bytes,
            exceeded: false,
            source_error: None,
        }
    }

    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Buffers until more than `want` bytes are ahead, or the source ends.
    fn fill_to(&mut self, want: usize) -> io::Result<()> {
        while !self.eof && self.available() <= want {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let chunk = match self.source.fill_buf() {
                Ok(chunk) => chunk,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    let kind = err.kind();
                    self.source_error = Some(err);
                    return Err(io::Error::new(kind, "pack source failed"));
                }
            };
            if chunk.is_empty() {
                self.eof = true;
                break;
            }
            let n = chunk.len().min(CHUNK);
            self.pulled += n as u64;
            if self.pulled > self.max_bytes {
                self.exceeded = true;
                return Err(io::Error::other("pack stream exceeds the byte limit"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.source.consume(n);
        }
        Ok(())
    }

    fn peek_header(&mut self) -> Result<[u8; PACK_HEADER], GitError> {
        if let Err(err) = self.fill_to(PACK_HEADER) {
            return Err(self.own_error().unwrap_or(GitError::PackRead { source: err }));
        }
        self.buf
            .get(self.pos..self.pos + PACK_HEADER)
            .and_then(|h| <[u8; PACK_HEADER]>::try_from(h).ok())
            .ok_or_else(|| GitError::malformed("pack stream ends inside the pack header"))
    }

    /// Errors raised by this reader itself rather than by gix's parsing.
    fn own_error(&mut self) -> Option<GitError> {
        if self.exceeded {
            return Some(GitError::size(Limit::TotalBytes, self.max_bytes, None, "pack stream"));
        }
        self.source_error.take().map(|source| GitError::PackRead { source })
    }

    /// After gix is done: the source must hold nothing more.
    fn ensure_at_end(&mut self) -> Result<(), GitError> {
        if let Err(err) = self.fill_to(0) {
            return Err(self.own_error().unwrap_or(GitError::PackRead { source: err }));
        }
        match self.available() {
            0 => Ok(()),
            n => Err(GitError::malformed(format!(
                "junk after the pack: at least {n} byte(s) follow its checksum at offset {}",
                self.served
            ))),
        }
    }

    /// Maps a failure of gix's import to the error a person can act on.
    fn classify_failure(&mut self, err: gix_error::Error, limits: &GitLimits) -> GitError {
        if let Some(own) = self.own_error() {
            return own;
        }
        let detail = format!("{err:#}");
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
}

impl Read for PackInput<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let ahead = self.fill_buf()?;
        let n = ahead.len().min(out.len());
        out[..n].copy_from_slice(&ahead[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for PackInput<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.fill_to(TAIL)?;
        let available = self.available();
        let serve = if available > TAIL {
            available - TAIL
        } else {
            // Only reachable at the end of the source: hand out the tail byte by byte.
            available.min(1)
        };
        Ok(&self.buf[self.pos..self.pos + serve])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.available());
        self.pos += amt;
        self.served += amt as u64;
    }
}
