//! Reading objects out of the store's packs with plain reads, a buffer at a time: checking out
//! a file never costs its size in memory unless it is stored as a delta, and the packs are
//! never mapped, so the agent's resident set does not grow with the release (RELIABILITY.md,
//! F7).
//!
//! gix's object database maps every pack whole, and a page touched in a mapping stays in the
//! resident set along with its neighbours (the kernel maps up to 64 KiB around a fault): one
//! header lookup per file of a 1 GiB release of 1,984 files put 90 MiB of the pack there,
//! and reading the delta-compressed trees and text files of a 10,000-file release through it
//! 50–100 MiB (session 8). gix also inflates an object whole into a buffer, even to report
//! where it lies (`gix_odb`'s `location_by_oid`). [`PackReader`] opens the store's pack
//! indexes itself, finds an object's entry and reads from the pack file: a blob stored whole
//! is inflated straight into its destination through a 64 KiB buffer; an object stored as a
//! delta is rebuilt by reading its chain's entries one by one, holding the base and one delta
//! at a time (the bundler keeps blobs over 16 MiB out of deltas; docs/decisions.md, "Memory
//! of an apply"). A loose object is not handled here: callers fall back to gix for it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use gix_hash::oid;
use gix_pack::data::entry::Header;
use gix_zlib::{Decompress, Status};

use super::delta::{self, DeltaError};
use super::error::{GitError, Limit};
use super::pack_stream::{compressed_bound, inflate_step, zlib_cause, Inflated};
use super::{GitLimits, ObjectStore};

/// Most bytes read from a pack at once, and inflated at once.
const BUFFER: usize = 64 << 10;

/// Longest pack entry header: type and size (at most 10 bytes for a 64-bit size) and a
/// `REF_DELTA`'s base id.
const MAX_ENTRY_HEADER: usize = 10 + 32;

/// Most bytes a delta's two leading sizes (its base's and its result's) take.
const MAX_DELTA_SIZES: usize = 2 * 10;

/// Most delta entries whose kind a reader remembers (about 40 bytes each).
const MAX_KINDS_REMEMBERED: usize = 1 << 16;

/// Reads objects out of the store's packs, for one thread.
pub(super) struct PackReader {
    pack_dir: PathBuf,
    kind: gix_hash::Kind,
    packs: Option<Vec<OpenPack>>,
    /// The kind of the object at each delta entry whose chain was walked for a header: a
    /// chain shares its lower links with many others.
    kinds: HashMap<(usize, u64), gix_object::Kind>,
    input: Vec<u8>,
    output: Vec<u8>,
    inflate: Decompress,
}

/// A pack of the store and its index, opened when first needed.
struct OpenPack {
    index: gix_pack::index::File,
    path: PathBuf,
    file: Option<File>,
}

/// One entry of a delta chain, from the object asked for down to its base.
struct Link {
    pack: usize,
    entry: gix_pack::data::Entry,
}

/// Where an object's entry lies, and its header.
struct Located {
    pack: usize,
    entry: gix_pack::data::Entry,
    /// Bytes read from the entry's start into the reader's input buffer.
    read: usize,
}

impl Clone for PackReader {
    /// A reader of the same store with nothing opened yet (its files and buffers are its own).
    fn clone(&self) -> Self {
        PackReader::at(self.pack_dir.clone(), self.kind)
    }
}

impl PackReader {
    pub(super) fn new(store: &ObjectStore) -> Self {
        PackReader::at(store.pack_dir.clone(), store.kind)
    }

    /// A reader of the packs in `pack_dir`, of object format `kind`.
    pub(super) fn at(pack_dir: PathBuf, kind: gix_hash::Kind) -> Self {
        PackReader {
            pack_dir,
            kind,
            packs: None,
            kinds: HashMap::new(),
            input: Vec::new(),
            output: Vec::new(),
            inflate: Decompress::new(),
        }
    }

    /// The kind and size of `id` if a pack holds it (whole or as a delta); `None` if none
    /// does (it is loose, or absent). A delta's kind is its chain's base's, its size the one
    /// its instructions declare.
    pub(super) fn header(&mut self, id: &oid) -> Result<Option<gix_object::Header>, GitError> {
        let Some(found) = self.locate(id, 0)? else {
            return Ok(None);
        };
        let top = Link { pack: found.pack, entry: found.entry };
        if let Some(kind) = top.entry.header.as_kind() {
            return Ok(Some(gix_object::Header { kind, size: top.entry.decompressed_size }));
        }
        let mut prefix = Vec::new();
        self.inflate(&top, 0, MAX_DELTA_SIZES as u64, &format!("delta of {id}"), &mut |bytes| {
            prefix.extend_from_slice(bytes);
            Ok(prefix.len() >= MAX_DELTA_SIZES)
        })?;
        let size = delta::result_size(&prefix).map_err(|e| self.corrupt(top.pack, format!("delta of {id}: {e}")))?;
        let kind = self.chain_kind(id, top)?;
        Ok(Some(gix_object::Header { kind, size }))
    }

    /// Reads object `id` whole into `buf` if a pack holds it, rebuilding it from its delta
    /// chain if it is stored as one, and returns its kind; `None` (with `buf` untouched) if
    /// no pack does (it is loose, or absent). Fails if it is larger than `max_size`, or an
    /// object or delta of its chain larger than `GitLimits`' default object size.
    pub(super) fn read(
        &mut self,
        id: &oid,
        max_size: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<gix_object::Kind>, GitError> {
        let Some(found) = self.locate(id, 0)? else {
            return Ok(None);
        };
        let chain = self.chain(id, Link { pack: found.pack, entry: found.entry })?;
        let (base, deltas) = chain.split_last().expect("a chain ends in its base");
        let kind = base.entry.header.as_kind().expect("a chain ends in a whole object");
        // Objects along the chain may be larger than the one asked for: the store's limit.
        let limit = |last: bool| if last { max_size } else { GitLimits::default().max_object_size };
        let mut data = self.inflate_whole(base, id, limit(deltas.is_empty()), Vec::new())?;
        let mut instructions = Vec::new();
        for (at, link) in deltas.iter().enumerate().rev() {
            instructions = self.inflate_whole(link, id, GitLimits::default().max_object_size, instructions)?;
            let what = format!("delta at offset {} (of {id})", link.entry.pack_offset());
            data = delta::apply(&data, &instructions, limit(at == 0)).map_err(|e| match e {
                DeltaError::Malformed(_) => self.corrupt(link.pack, format!("{what}: {e}")),
                DeltaError::TooLarge { declared } | DeltaError::OutOfMemory { declared } => {
                    GitError::size(Limit::ObjectSize, limit(at == 0), Some(declared), what)
                }
            })?;
        }
        *buf = data;
        Ok(Some(kind))
    }

    /// Writes blob `id`, of `size` bytes, to `out` (which is the file at `path`) if a pack
    /// holds it whole. Returns `false`, having written nothing, when none does (it is a
    /// delta, or loose).
    pub(super) fn copy_blob(&mut self, id: &oid, size: u64, out: &mut File, path: &Path) -> Result<bool, GitError> {
        let want = usize::try_from(compressed_bound(size)).unwrap_or(usize::MAX);
        let Some(Located { pack, entry, read }) = self.locate(id, want)? else {
            return Ok(false);
        };
        if entry.header != Header::Blob {
            return Ok(false);
        }
        if entry.decompressed_size != size {
            let found = entry.decompressed_size;
            return Err(
                self.corrupt(pack, format!("the entry of blob {id} holds {found} bytes, its header said {size}"))
            );
        }
        self.inflate(&Link { pack, entry }, read, size, &format!("blob {id}"), &mut |bytes| {
            out.write_all(bytes).map_err(|e| GitError::io(path, e))?;
            Ok(false)
        })?;
        Ok(true)
    }

    /// The entries from `top`, an entry of object `id`, down its delta chain to its base.
    fn chain(&mut self, id: &oid, top: Link) -> Result<Vec<Link>, GitError> {
        let mut chain = Vec::new();
        let mut link = top;
        loop {
            let base = self.base_of(id, &link)?;
            chain.push(link);
            let Some((pack, offset)) = base else { return Ok(chain) };
            self.check_chain_length(id, pack, chain.len())?;
            let (entry, _) = self.entry_at(pack, offset, 0, id)?;
            link = Link { pack, entry };
        }
    }

    /// The kind of the object whose entry is `top` (of object `id`): its delta chain's
    /// base's, found by walking the chain's entry headers down to an entry walked before.
    fn chain_kind(&mut self, id: &oid, top: Link) -> Result<gix_object::Kind, GitError> {
        let mut walked = Vec::new();
        let mut link = top;
        let kind = loop {
            let at = (link.pack, link.entry.pack_offset());
            if let Some(kind) = link.entry.header.as_kind().or_else(|| self.kinds.get(&at).copied()) {
                break kind;
            }
            walked.push(at);
            let (pack, offset) = self.base_of(id, &link)?.expect("a delta has a base");
            self.check_chain_length(id, pack, walked.len())?;
            let (entry, _) = self.entry_at(pack, offset, 0, id)?;
            link = Link { pack, entry };
        };
        if self.kinds.len() + walked.len() > MAX_KINDS_REMEMBERED {
            self.kinds.clear();
        }
        self.kinds.extend(walked.into_iter().map(|at| (at, kind)));
        Ok(kind)
    }

    /// Where the base of `link`'s entry (of object `id`) lies; `None` for a whole object.
    fn base_of(&mut self, id: &oid, link: &Link) -> Result<Option<(usize, u64)>, GitError> {
        match link.entry.header {
            Header::OfsDelta { base_distance } => match link.entry.checked_base_pack_offset(base_distance) {
                Some(offset) => Ok(Some((link.pack, offset))),
                None => {
                    let at = link.entry.pack_offset();
                    Err(self.corrupt(link.pack, format!("delta at offset {at} (of {id}) has no base")))
                }
            },
            Header::RefDelta { base_id } => match self.find(&base_id)? {
                Some(found) => Ok(Some(found)),
                None => Err(self.corrupt(link.pack, format!("base {base_id} of a delta of {id} is missing"))),
            },
            _ => Ok(None),
        }
    }

    /// Fails once a chain of `id` has passed `GitLimits`' longest (a cycle of ref deltas in
    /// a damaged pack would never end).
    fn check_chain_length(&self, id: &oid, pack: usize, links: usize) -> Result<(), GitError> {
        let longest = GitLimits::default().max_delta_chain as usize;
        match links > longest {
            true => Err(self.corrupt(pack, format!("the delta chain of {id} is longer than {longest}"))),
            false => Ok(()),
        }
    }

    /// Inflates `link`'s entry whole into `buf` (emptied first) if it is at most `limit`
    /// bytes; returns it. `id` is the object being read, for errors.
    fn inflate_whole(&mut self, link: &Link, id: &oid, limit: u64, mut buf: Vec<u8>) -> Result<Vec<u8>, GitError> {
        let size = link.entry.decompressed_size;
        let what = format!("entry at offset {} (of {id})", link.entry.pack_offset());
        if size > limit {
            return Err(GitError::size(Limit::ObjectSize, limit, Some(size), what));
        }
        buf.clear();
        let len = usize::try_from(size).map_err(|_| GitError::size(Limit::ObjectSize, limit, Some(size), &what))?;
        buf.try_reserve_exact(len)
            .map_err(|_| GitError::size(Limit::ObjectSize, limit, Some(size), format!("{what}: out of memory")))?;
        self.inflate(link, 0, size, &what, &mut |bytes| {
            buf.extend_from_slice(bytes);
            Ok(false)
        })?;
        Ok(buf)
    }

    /// Inflates the data of `link`'s entry, handing the bytes to `sink` as they come, until
    /// the stream ends (checking it makes exactly the entry's size) or `sink` returns true.
    /// The first `prefetched` bytes of the input buffer hold the entry from its start; reads
    /// are sized for `needed` bytes of output (a small entry costs a small read).
    fn inflate(
        &mut self,
        link: &Link,
        prefetched: usize,
        needed: u64,
        what: &str,
        sink: &mut dyn FnMut(&[u8]) -> Result<bool, GitError>,
    ) -> Result<(), GitError> {
        let size = link.entry.decompressed_size;
        let PackReader { packs, input, output, inflate, .. } = self;
        let pack = &packs.as_ref().expect("opened by locate")[link.pack];
        let corrupt = |detail: String| GitError::Store { detail: format!("{}: {detail}", pack.path.display()) };
        let file = pack.file.as_ref().expect("opened by entry_at");
        output.resize(BUFFER.min(usize::try_from(size).unwrap_or(BUFFER)).max(1), 0);
        inflate.reset();
        let header = link.entry.header_size();
        let (mut start, mut end, mut next) = match prefetched > header {
            true => (header, prefetched, link.entry.pack_offset() + prefetched as u64),
            false => (0, 0, link.entry.data_offset),
        };
        loop {
            if start == end {
                input.resize(usize::try_from(compressed_bound(needed)).unwrap_or(BUFFER).clamp(64, BUFFER), 0);
                end = read_at_most(file, input, next).map_err(|e| GitError::io(&pack.path, e))?;
                (start, next) = (0, next + end as u64);
            }
            let Inflated { status, consumed, written } = inflate_step(inflate, &input[start..end], output);
            start += consumed;
            if inflate.total_out() > size {
                return Err(corrupt(format!("{what} inflates to more than its {size} bytes")));
            }
            if sink(&output[..written])? {
                return Ok(());
            }
            match status {
                Ok(Status::StreamEnd) => break,
                Ok(_) if consumed > 0 || written > 0 => {}
                Ok(_) => return Err(corrupt(format!("{what}: its zlib stream is cut off"))),
                Err(err) => return Err(corrupt(format!("{what}: corrupt zlib stream: {}", zlib_cause(inflate, &err)))),
            }
        }
        if inflate.total_out() != size {
            let made = inflate.total_out();
            return Err(corrupt(format!("{what} inflates to {made} bytes, not {size}")));
        }
        Ok(())
    }

    /// An error about the store's pack number `pack`.
    fn corrupt(&self, pack: usize, detail: String) -> GitError {
        let path = self.packs.as_ref().map(|p| p[pack].path.display().to_string()).unwrap_or_default();
        GitError::Store { detail: format!("{path}: {detail}") }
    }

    /// Finds `id` in the store's indexes and reads its entry's header, and up to `more`
    /// bytes after it, into the input buffer.
    fn locate(&mut self, id: &oid, more: usize) -> Result<Option<Located>, GitError> {
        let Some((pack, offset)) = self.find(id)? else {
            return Ok(None);
        };
        let (entry, read) = self.entry_at(pack, offset, more, id)?;
        Ok(Some(Located { pack, entry, read }))
    }

    /// The pack holding `id` and its entry's offset there. A miss lists the store's packs
    /// again once (an import since they were opened may have added one).
    fn find(&mut self, id: &oid) -> Result<Option<(usize, u64)>, GitError> {
        for fresh in [self.packs.is_none(), true] {
            if fresh {
                // Packs keep their numbers (a chain being walked refers to them): new ones
                // are added after those known, and a pack pruned meanwhile stays readable
                // through its open index and file.
                let packs = self.packs.get_or_insert_with(Vec::new);
                for (path, index) in super::pack_indexes(&self.pack_dir, self.kind)? {
                    let path = path.with_extension("pack");
                    if !packs.iter().any(|p| p.path == path) {
                        packs.push(OpenPack { index, path, file: None });
                    }
                }
            }
            let packs = self.packs.as_ref().expect("opened above");
            let found = packs.iter().enumerate().find_map(|(at, pack)| {
                let entry = pack.index.lookup(id)?;
                Some((at, pack.index.pack_offset_at_index(entry)))
            });
            if found.is_some() || fresh {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Reads the header of the entry at `offset` of pack `pack`, and up to `more` bytes
    /// after it, into the input buffer; returns the entry and the bytes read. `id` is the
    /// object being read, for errors.
    fn entry_at(
        &mut self,
        pack: usize,
        offset: u64,
        more: usize,
        id: &oid,
    ) -> Result<(gix_pack::data::Entry, usize), GitError> {
        let open = &mut self.packs.as_mut().expect("opened by find")[pack];
        let file = match &mut open.file {
            Some(file) => &*file,
            None => &*open.file.insert(File::open(&open.path).map_err(|e| GitError::io(&open.path, e))?),
        };
        self.input.resize(more.saturating_add(MAX_ENTRY_HEADER).min(BUFFER), 0);
        let read = read_at_most(file, &mut self.input, offset).map_err(|e| GitError::io(&open.path, e))?;
        let entry = gix_pack::data::Entry::from_bytes(&self.input[..read], offset, self.kind).map_err(|e| {
            GitError::Store { detail: format!("{}: entry at offset {offset} (of {id}): {e}", open.path.display()) }
        })?;
        Ok((entry, read))
    }
}

/// Reads from `offset` until `buf` is full or the file ends; returns the bytes read.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
