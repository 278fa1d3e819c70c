//! Reading whole objects' headers and copying whole blobs out of the store's packs with plain
//! reads, a buffer at a time: checking out a file never costs its size in memory, and the
//! packs are never mapped, so the agent's resident set does not grow with the release
//! (RELIABILITY.md, F7).
//!
//! gix's object database maps every pack whole, and a page touched in a mapping stays in the
//! resident set along with its neighbours (the kernel maps up to 64 KiB around a fault): one
//! header lookup per file of a 1 GiB release of 1,984 files put 90 MiB of the pack there.
//! gix also inflates an object whole into a buffer, even to report where it lies
//! (`gix_odb`'s `location_by_oid`). [`PackReader`] opens the store's pack indexes itself,
//! finds an object's entry and reads its header from the pack file; a blob stored whole is
//! inflated straight into its destination through a 64 KiB buffer. An object stored as a
//! delta, or loose, is not handled here: callers fall back to gix for it (the bundler keeps
//! blobs over 16 MiB out of deltas; docs/decisions.md, "Memory of an apply").

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use gix_hash::oid;
use gix_pack::data::entry::Header;
use gix_zlib::{Decompress, Status};

use super::error::GitError;
use super::pack_stream::{compressed_bound, inflate_step, zlib_cause, Inflated};
use super::ObjectStore;

/// Most bytes read from a pack at once, and inflated at once.
const BUFFER: usize = 64 << 10;

/// Longest pack entry header: type and size (at most 10 bytes for a 64-bit size) and a
/// `REF_DELTA`'s base id.
const MAX_ENTRY_HEADER: usize = 10 + 32;

/// Reads whole objects out of the store's packs, for one thread.
pub(super) struct PackReader<'s> {
    store: &'s ObjectStore,
    packs: Option<Vec<OpenPack>>,
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

/// Where an object's entry lies, and its header.
struct Located {
    pack: usize,
    offset: u64,
    entry: gix_pack::data::Entry,
    /// Bytes read from `offset` into the reader's input buffer.
    read: usize,
}

impl<'s> PackReader<'s> {
    pub(super) fn new(store: &'s ObjectStore) -> Self {
        PackReader { store, packs: None, input: Vec::new(), output: Vec::new(), inflate: Decompress::new() }
    }

    /// The kind and size of `id` if a pack holds it whole; `None` if none does (it is a
    /// delta, or loose, or absent).
    pub(super) fn header(&mut self, id: &oid) -> Result<Option<gix_object::Header>, GitError> {
        let Some(found) = self.locate(id, 0)? else {
            return Ok(None);
        };
        Ok(found.entry.header.as_kind().map(|kind| gix_object::Header { kind, size: found.entry.decompressed_size }))
    }

    /// Writes blob `id`, of `size` bytes, to `out` (which is the file at `path`) if a pack
    /// holds it whole. Returns `false`, having written nothing, when none does (it is a
    /// delta, or loose).
    pub(super) fn copy_blob(&mut self, id: &oid, size: u64, out: &mut File, path: &Path) -> Result<bool, GitError> {
        let want = usize::try_from(compressed_bound(size)).unwrap_or(usize::MAX);
        let Some(Located { pack, offset, entry, read }) = self.locate(id, want)? else {
            return Ok(false);
        };
        let PackReader { packs, input, output, inflate, .. } = self;
        let pack = &packs.as_ref().expect("opened by locate")[pack];
        let pack_path = &pack.path;
        let store_error = |detail: String| GitError::Store { detail: format!("{}: {detail}", pack_path.display()) };
        let file = pack.file.as_ref().expect("opened by locate");
        if entry.header != Header::Blob {
            return Ok(false);
        }
        if entry.decompressed_size != size {
            let found = entry.decompressed_size;
            return Err(store_error(format!("the entry of blob {id} holds {found} bytes, its header said {size}")));
        }
        output.resize(BUFFER.min(usize::try_from(size).unwrap_or(BUFFER)).max(1), 0);
        inflate.reset();
        let (mut start, mut end, mut next) = (entry.header_size(), read, offset + read as u64);
        loop {
            if start == end {
                input.resize(BUFFER, 0);
                end = read_at_most(file, input, next).map_err(|e| GitError::io(pack_path, e))?;
                (start, next) = (0, next + end as u64);
            }
            let Inflated { status, consumed, written } = inflate_step(inflate, &input[start..end], output);
            start += consumed;
            if inflate.total_out() > size {
                return Err(store_error(format!("blob {id} inflates to more than its {size} bytes")));
            }
            out.write_all(&output[..written]).map_err(|e| GitError::io(path, e))?;
            match status {
                Ok(Status::StreamEnd) => break,
                Ok(_) if consumed > 0 || written > 0 => {}
                Ok(_) => return Err(store_error(format!("blob {id}: its zlib stream is cut off"))),
                Err(err) => {
                    return Err(store_error(format!("blob {id}: corrupt zlib stream: {}", zlib_cause(inflate, &err))))
                }
            }
        }
        if inflate.total_out() != size {
            let made = inflate.total_out();
            return Err(store_error(format!("blob {id} inflates to {made} bytes, not {size}")));
        }
        Ok(true)
    }

    /// Finds `id` in the store's indexes and reads its entry's header, and up to `more`
    /// bytes after it, into the input buffer.
    fn locate(&mut self, id: &oid, more: usize) -> Result<Option<Located>, GitError> {
        if self.packs.is_none() {
            let indexes = self.store.pack_indexes()?;
            let open = |(path, index): (PathBuf, _)| OpenPack { index, path: path.with_extension("pack"), file: None };
            self.packs = Some(indexes.into_iter().map(open).collect());
        }
        let packs = self.packs.as_mut().expect("opened above");
        let found = packs.iter().enumerate().find_map(|(at, pack)| {
            let entry = pack.index.lookup(id)?;
            Some((at, pack.index.pack_offset_at_index(entry)))
        });
        let Some((at, offset)) = found else {
            return Ok(None);
        };
        let pack = &mut packs[at];
        let file = match &mut pack.file {
            Some(file) => &*file,
            None => &*pack.file.insert(File::open(&pack.path).map_err(|e| GitError::io(&pack.path, e))?),
        };
        self.input.resize(more.saturating_add(MAX_ENTRY_HEADER).min(BUFFER), 0);
        let read = read_at_most(file, &mut self.input, offset).map_err(|e| GitError::io(&pack.path, e))?;
        let entry = gix_pack::data::Entry::from_bytes(&self.input[..read], offset, self.store.kind).map_err(|e| {
            GitError::Store { detail: format!("{}: entry of {id} at offset {offset}: {e}", pack.path.display()) }
        })?;
        Ok(Some(Located { pack: at, offset, entry, read }))
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
