//! Copying an untrusted pack stream into a file one entry at a time, so that no entry is ever
//! held in memory whole.
//!
//! gix's own stream reader (`gix_pack::data::input::BytesToEntriesIter`) copies each entry's
//! compressed bytes into a `Vec` before hashing them: one entry costs its compressed size in
//! memory, and a zlib stream padded with empty stored blocks is far longer than the object it
//! declares (RELIABILITY.md, F6). [`PackStream`] inflates each entry into a small scratch
//! buffer while its bytes pass into the pack file, and records only the entry's offset,
//! CRC-32 and (for a whole object) id. On the way it enforces, per entry, the
//! declared size against `max_object_size` (before inflating anything), a compressed length
//! within what zlib can need for the declared size ([`compressed_bound`]) and an inflated
//! length equal to the declared size; for the whole stream, the byte cap, the trailing
//! checksum, and that nothing follows it. Whole (non-delta) objects are hashed as they
//! inflate, so their ids are known without ever holding one whole; deltas are resolved
//! afterwards from the file ([`super::pack_index`]).
//!
//! Thin packs: the `REF_DELTA` bases found in the object store are appended after the
//! stream's last entry, as `git index-pack --fix-thin` does; the header's object count is
//! patched and the trailing checksum recomputed over the whole file. Every pack written is
//! therefore self-contained. Bases are read out of the store with plain reads
//! (`pack_reader.rs`), never by mapping its packs.
//!
//! A delta payload's pack may be followed by a patch section (`patches`): its blobs are
//! appended the same way.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::Path;

use gix_hash::ObjectId;
use gix_object::Find;
use gix_pack::data::entry::Header;
use gix_zlib::{Decompress, FlushDecompress, Status};

use super::error::{GitError, Limit};
use super::pack_index::{PackedEntry, PackedObject};
use super::ObjectStore;

mod patches;
mod tap;
use tap::{EntryBudget, PackFile, Tap};

/// Size of a pack header: `PACK`, version, object count.
pub(super) const PACK_HEADER: usize = 12;
/// Inflated bytes produced per step; they are counted and dropped.
const SCRATCH: usize = 32 << 10;

/// The most compressed bytes a zlib stream needs for `size` bytes of data: zlib's
/// `deflateBound` for stored blocks at the smallest memory level (`size` + `size`/32 +
/// `size`/128 + `size`/2048 + 7), rounded up, plus the 6-byte zlib wrapper. Every zlib
/// setting stays below it; an entry above it is padding, not data.
pub fn compressed_bound(size: u64) -> u64 {
    size.saturating_add(size / 16).saturating_add(64)
}

/// What one call of [`inflate_step`] did.
pub(super) struct Inflated {
    pub status: gix_error::Result<Status>,
    /// Input bytes used.
    pub consumed: usize,
    /// Bytes written to the front of the output buffer.
    pub written: usize,
}

/// Inflates what it can of `input` into `output`; `input` empty means its stream has ended.
pub(super) fn inflate_step(inflate: &mut Decompress, input: &[u8], output: &mut [u8]) -> Inflated {
    let flush = if input.is_empty() { FlushDecompress::Finish } else { FlushDecompress::None };
    let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
    let status = inflate.decompress(input, output, flush);
    let consumed = (inflate.total_in() - before_in) as usize;
    let written = (inflate.total_out() - before_out) as usize;
    Inflated { status, consumed, written }
}

/// What zlib says went wrong, for an error message.
pub(super) fn zlib_cause(inflate: &Decompress, err: &dyn std::fmt::Display) -> String {
    inflate.error_message().map_or_else(|| format!("{err:#}"), String::from)
}

/// The pack stream read entry by entry into a file by [`PackStream::run`].
pub(super) struct PackStream<'a> {
    tap: Tap<'a>,
    inflate: Decompress,
    scratch: Vec<u8>,
    kind: gix_hash::Kind,
    max_object_size: u64,
    max_objects: u64,
    bases: &'a ObjectStore,
    declared: u32,
    left: u32,
    ref_bases: Vec<ObjectId>,
    seen_bases: HashSet<ObjectId>,
    entries: Vec<PackedEntry>,
    appended: u32,
    patched: u32,
}

/// What [`PackStream::run`] wrote.
#[derive(Debug)]
pub(super) struct StreamedPack {
    /// Every entry of the file, in offset order: the stream's, then the appended objects.
    pub entries: Vec<PackedEntry>,
    /// The file's trailing checksum.
    pub checksum: ObjectId,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Objects appended after the stream's entries: thin-pack bases and patched blobs.
    pub appended: u32,
    /// Blobs made by the patch section, of `appended`.
    pub patched: u32,
}

impl<'a> PackStream<'a> {
    /// Creates the pack file `path` and starts it with `header`, the pack header already
    /// read from `source`, which declares `declared` objects. `bases` resolves thin-pack
    /// bases.
    pub(super) fn create(
        source: &'a mut dyn BufRead,
        path: &Path,
        header: [u8; PACK_HEADER],
        declared: u32,
        limits: &super::GitLimits,
        bases: &'a ObjectStore,
    ) -> Result<Self, GitError> {
        let kind = bases.kind;
        let file = File::options().read(true).write(true).create_new(true).open(path);
        let mut out = PackFile::new(file.map_err(|e| GitError::io(path, e))?, path.to_owned(), kind);
        out.write_all(&header).map_err(|e| out.io_error(e))?;
        let mut tap = Tap::new(source, out, limits.max_total_bytes);
        tap.served = PACK_HEADER as u64;
        Ok(PackStream {
            tap,
            inflate: Decompress::new(),
            scratch: vec![0; SCRATCH],
            kind,
            max_object_size: limits.max_object_size,
            max_objects: limits.max_objects,
            bases,
            declared,
            left: declared,
            ref_bases: Vec::new(),
            seen_bases: HashSet::new(),
            entries: Vec::new(),
            appended: 0,
            patched: 0,
        })
    }

    /// Reads every entry, the trailer, the thin-pack bases and the patch section into the
    /// file, checking everything on the way.
    pub(super) fn run(mut self) -> Result<StreamedPack, GitError> {
        while self.left > 0 {
            let entry = self.read_entry()?;
            self.left -= 1;
            if let PackedObject::RefDelta { base_id } = entry.object {
                if self.seen_bases.insert(base_id) {
                    self.ref_bases.push(base_id);
                }
            }
            self.entries.push(entry);
        }
        let checksum = self.complete()?;
        Ok(StreamedPack {
            entries: self.entries,
            checksum,
            bytes_read: self.tap.served,
            appended: self.appended,
            patched: self.patched,
        })
    }

    fn read_entry(&mut self) -> Result<PackedEntry, GitError> {
        let at = self.tap.out.len;
        self.tap.out.begin_entry();
        self.tap.entry = None;
        let parsed = gix_pack::data::Entry::from_read(&mut self.tap, at, self.kind.len_in_bytes()).map_err(|e| {
            self.tap.failure.take().unwrap_or_else(|| match e.kind() {
                io::ErrorKind::UnexpectedEof => GitError::malformed(format!(
                    "pack stream ends inside the header of the entry at offset {at} (truncated pack)"
                )),
                _ => entry_error(at, e),
            })
        })?;
        let header_size = self.tap.out.entry_len;
        let declared = parsed.decompressed_size;
        if declared > self.max_object_size {
            return Err(GitError::size(
                Limit::ObjectSize,
                self.max_object_size,
                Some(declared),
                format!("pack entry at offset {at}"),
            ));
        }
        self.tap.entry = Some(EntryBudget { at, declared, limit: header_size + compressed_bound(declared) });
        let object = match parsed.header {
            Header::OfsDelta { base_distance } => {
                let base_offset = parsed
                    .checked_base_pack_offset(base_distance)
                    .ok_or_else(|| entry_error(at, "its delta base would lie before the start of the pack"))?;
                self.inflate_entry(at, declared, None)?;
                PackedObject::OfsDelta { base_offset }
            }
            Header::RefDelta { base_id } => {
                self.inflate_entry(at, declared, None)?;
                PackedObject::RefDelta { base_id }
            }
            Header::Blob | Header::Tree | Header::Commit | Header::Tag => {
                let kind = parsed.header.as_kind().expect("a whole object's header names its kind");
                let mut hasher = gix_hash::hasher(self.kind);
                hasher.update(&gix_object::encode::loose_header(kind, declared));
                self.inflate_entry(at, declared, Some(&mut hasher))?;
                PackedObject::Whole(hasher.try_finalize().map_err(|e| entry_error(at, e))?)
            }
        };
        self.tap.entry = None;
        Ok(PackedEntry { offset: at, crc32: self.tap.out.entry_crc(), object })
    }

    /// Inflates one zlib stream from the tap, counting what comes out and passing it to
    /// `hasher` if there is one.
    fn inflate_entry(
        &mut self,
        at: u64,
        declared: u64,
        mut hasher: Option<&mut gix_hash::Hasher>,
    ) -> Result<(), GitError> {
        self.inflate.reset();
        let mut produced = 0u64;
        loop {
            let (Inflated { status, consumed, written }, eof) = {
                let input = match self.tap.fill_buf() {
                    Ok(input) => input,
                    Err(err) => return Err(self.tap.failure.take().unwrap_or_else(|| entry_error(at, err))),
                };
                (inflate_step(&mut self.inflate, input, &mut self.scratch), input.is_empty())
            };
            self.tap.consume(consumed);
            if let Some(err) = self.tap.failure.take() {
                return Err(err);
            }
            if let Some(hasher) = hasher.as_deref_mut() {
                hasher.update(&self.scratch[..written]);
            }
            produced += written as u64;
            if produced > declared {
                return Err(entry_error(at, format!("inflates to more than its declared {declared} bytes")));
            }
            match status {
                Ok(Status::StreamEnd) => break,
                Ok(_) if eof => {
                    return Err(GitError::malformed(format!(
                        "pack stream ends inside the entry at offset {at} (truncated pack)"
                    )))
                }
                Ok(_) if consumed > 0 || written > 0 => {}
                Ok(_) => return Err(entry_error(at, "its zlib stream makes no progress")),
                Err(err) => {
                    return Err(entry_error(at, format!("corrupt zlib stream: {}", zlib_cause(&self.inflate, &err))))
                }
            }
        }
        if produced != declared {
            return Err(entry_error(at, format!("inflates to {produced} bytes, not its declared {declared}")));
        }
        Ok(())
    }

    /// After the last entry: the trailer must be the checksum of what came before; then
    /// thin-pack bases are appended, then the blobs of the patch section if one follows
    /// (nothing else may), and the file is flushed. Returns the file's checksum.
    fn complete(&mut self) -> Result<ObjectId, GitError> {
        let computed = self.tap.out.take_hash()?;
        self.tap.record = false;
        let mut trailer = vec![0; self.kind.len_in_bytes()];
        self.tap.read_exact_checked(&mut trailer).map_err(|e| match e {
            GitError::Malformed { .. } => GitError::malformed("pack stream ends inside its trailing checksum"),
            other => other,
        })?;
        if computed.as_slice() != trailer.as_slice() {
            return Err(GitError::malformed(format!(
                "pack checksum mismatch: the trailer says {}, the bytes hash to {computed}",
                hex::encode(&trailer)
            )));
        }
        let mut checksum = computed;
        let ref_bases = std::mem::take(&mut self.ref_bases);
        if !ref_bases.is_empty() {
            // A base the stream holds whole must not be appended again: git refuses a pack
            // holding one object twice (as a base of the same deltas).
            let whole: HashSet<ObjectId> = self
                .entries
                .iter()
                .filter_map(|e| match e.object {
                    PackedObject::Whole(id) => Some(id),
                    _ => None,
                })
                .collect();
            for id in ref_bases.iter().filter(|id| !whole.contains(*id)) {
                self.append_base(id)?;
            }
        }
        if self.tap.ready()? > 0 {
            self.apply_patches()?;
        }
        self.tap.ensure_at_end()?;
        if self.appended > 0 {
            let count = self
                .declared
                .checked_add(self.appended)
                .ok_or_else(|| GitError::malformed("too many objects with the thin-pack bases"))?;
            checksum = self.tap.out.rewrite_count_and_hash(count)?;
        }
        self.tap.out.write_trailer(checksum.as_slice())?;
        Ok(checksum)
    }

    /// Appends `id` from the object store as a full entry, if the store has it. A base it
    /// lacks must be in the pack itself, or delta resolution refuses the pack.
    fn append_base(&mut self, id: &ObjectId) -> Result<(), GitError> {
        let Some((kind, data)) = self.find_in_store(id)? else {
            return Ok(());
        };
        let header = match kind {
            gix_object::Kind::Blob => Header::Blob,
            gix_object::Kind::Tree => Header::Tree,
            gix_object::Kind::Commit => Header::Commit,
            gix_object::Kind::Tag => Header::Tag,
        };
        self.append_object(header, &data, *id)
    }

    /// The kind and content of `id` in the object store, if it is there.
    fn find_in_store(&self, id: &ObjectId) -> Result<Option<(gix_object::Kind, Vec<u8>)>, GitError> {
        let mut buf = Vec::new();
        // Packed objects with plain reads (gix would map the store's packs whole).
        if let Some(kind) = self.bases.reader.borrow_mut().read(id, self.max_object_size, &mut buf)? {
            return Ok(Some((kind, buf)));
        }
        // gix's loose lookups hand back the whole buffer as the object.
        let found = match self.bases.odb.try_find(id, &mut buf) {
            Ok(found) => found.map(|data| (data.kind, data.data.len())),
            Err(err) => return Err(GitError::Store { detail: format!("{id}: {err}") }),
        };
        Ok(found.map(|(kind, len)| {
            buf.truncate(len);
            (kind, buf)
        }))
    }

    /// Appends the object `id` after the stream's entries as a full, stored entry.
    fn append_object(&mut self, header: Header, data: &[u8], id: ObjectId) -> Result<(), GitError> {
        let out = &mut self.tap.out;
        let at = out.len;
        out.begin_entry();
        let size = data.len() as u64;
        header.write_to(size, out).map_err(|e| out.io_error(e))?;
        // Stored, not compressed: the payload's own entries arrive stored too (the bundler
        // packs with `pack.compression=0` for zstd), and deflating the bases of a 10 % delta
        // was a quarter of its apply's CPU time.
        let compressed = {
            let mut deflate = gix_zlib::stream::deflate::Write::new(&mut *out, gix_zlib::Compression::NONE);
            deflate.write_all(data).and_then(|()| deflate.flush())
        };
        compressed.map_err(|e| out.io_error(e))?;
        self.entries.push(PackedEntry { offset: at, crc32: out.entry_crc(), object: PackedObject::Whole(id) });
        self.appended += 1;
        Ok(())
    }
}

fn entry_error(at: u64, detail: impl std::fmt::Display) -> GitError {
    GitError::malformed(format!("pack entry at offset {at}: {detail}"))
}
