//! Giving every object of a newly written pack its id, and writing the pack's `.idx`.
//!
//! [`super::pack_stream`] hashes each whole (non-delta) object while it inflates it on its
//! way to disk, so a whole object is never held in memory, however large: that is what
//! keeps an apply's memory independent of the largest file (RELIABILITY.md, F7). What it
//! cannot hash are deltas. [`resolve_deltas`] finds them from their bases: it walks the
//! tree of deltas depth first from each whole object that has any, reading entries back from
//! the pack file, so it holds the objects of one delta chain at a time. `REF_DELTA`s are
//! attached to their base by id once that id is known, wherever the base lies in the pack,
//! and chain lengths are enforced on the way.
//!
//! [`write_index`] then writes a version 2 index, byte for byte what `git index-pack`
//! writes for the same pack: fan-out table, sorted ids, CRC-32s, offsets (those past 2 GiB in
//! a table of 64-bit ones), the pack's checksum, and the index's own.
//!
//! This replaces gix's index writer, which inflated every whole object into a buffer of its
//! full size to hash it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use gix_hash::ObjectId;

use super::delta::{self, DeltaError};
use super::error::{GitError, Limit};

/// One entry of a pack written by [`super::pack_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PackedEntry {
    /// Offset of the entry's header in the pack.
    pub offset: u64,
    /// CRC-32 of the entry's bytes (header and compressed data), for the index.
    pub crc32: u32,
    /// What the entry holds.
    pub object: PackedObject,
}

/// What a pack entry holds, as far as it is known before deltas are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PackedObject {
    /// A whole object, hashed while it was written.
    Whole(ObjectId),
    /// A delta against the entry at this offset (earlier in the pack).
    OfsDelta { base_offset: u64 },
    /// A delta against the object with this id.
    RefDelta { base_id: ObjectId },
}

/// The ids of a pack's objects, in entry order, and its longest delta chain.
#[derive(Debug)]
pub(super) struct Resolved {
    pub ids: Vec<ObjectId>,
    pub longest_delta_chain: u32,
}

/// An object being resolved whose deltas are still to be applied.
struct Frame {
    kind: gix_object::Kind,
    data: Vec<u8>,
    depth: u32,
    children: Vec<usize>,
}

/// Resolves the id of every entry of `pack` (whose entries, in offset order, are `entries`),
/// applying each delta to its base. Deltas may be at most `max_object_size` bytes once
/// applied and chains at most `max_delta_chain` long.
pub(super) fn resolve_deltas(
    pack: &gix_pack::data::File,
    entries: &[PackedEntry],
    max_object_size: u64,
    max_delta_chain: u32,
) -> Result<Resolved, GitError> {
    let mut ids: Vec<Option<ObjectId>> = Vec::with_capacity(entries.len());
    let mut ofs_children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ref_children: HashMap<ObjectId, Vec<usize>> = HashMap::new();
    for (at, entry) in entries.iter().enumerate() {
        ids.push(None);
        match entry.object {
            PackedObject::Whole(id) => ids[at] = Some(id),
            PackedObject::OfsDelta { base_offset } => {
                let base = entries.binary_search_by_key(&base_offset, |e| e.offset).map_err(|_| {
                    GitError::malformed(format!(
                        "pack entry at offset {}: its delta base at offset {base_offset} is not an entry",
                        entry.offset
                    ))
                })?;
                ofs_children.entry(base).or_default().push(at);
            }
            PackedObject::RefDelta { base_id } => ref_children.entry(base_id).or_default().push(at),
        }
    }
    let mut resolver =
        Resolver { pack, entries, inflate: gix_zlib::Inflate::default(), max_object_size, max_delta_chain, longest: 0 };
    let mut children_of = |at: usize, id: &ObjectId| {
        let mut children = ofs_children.remove(&at).unwrap_or_default();
        children.extend(ref_children.remove(id).unwrap_or_default());
        children
    };
    for root in 0..entries.len() {
        let Some(id) = ids[root] else { continue };
        let children = children_of(root, &id);
        if children.is_empty() {
            continue;
        }
        let (kind, data) = resolver.read_whole(root)?;
        let mut stack = vec![Frame { kind, data, depth: 0, children }];
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.children.pop() else {
                stack.pop();
                continue;
            };
            let (kind, depth) = (frame.kind, frame.depth + 1);
            let data = resolver.apply_delta(child, &frame.data, depth)?;
            let id = hash(pack.object_hash(), kind, &data, entries[child].offset)?;
            ids[child] = Some(id);
            let children = children_of(child, &id);
            if !children.is_empty() {
                stack.push(Frame { kind, data, depth, children });
            }
        }
    }
    if ids.iter().any(Option::is_none) {
        // Every delta left unresolved hangs off a `REF_DELTA` whose base never turned up:
        // name the first of those.
        let first = ref_children.iter().flat_map(|(base, at)| at.iter().map(move |at| (*at, base))).min();
        return Err(match first {
            Some((at, base)) => GitError::ThinBaseMissing {
                detail: format!(
                    "the delta at offset {} needs object {base}, which is neither in the pack nor in the store",
                    entries[at].offset
                ),
            },
            None => GitError::malformed("a delta of the pack cannot be resolved"),
        });
    }
    let resolved = ids.into_iter().flatten().collect();
    Ok(Resolved { ids: resolved, longest_delta_chain: resolver.longest })
}

/// Reads entries back from the pack file and applies deltas.
struct Resolver<'a> {
    pack: &'a gix_pack::data::File,
    entries: &'a [PackedEntry],
    inflate: gix_zlib::Inflate,
    max_object_size: u64,
    max_delta_chain: u32,
    longest: u32,
}

impl Resolver<'_> {
    /// The kind and inflated content of the entry at `at`.
    fn read_whole(&mut self, at: usize) -> Result<(gix_object::Kind, Vec<u8>), GitError> {
        let (entry, data) = self.inflate_entry(at)?;
        let kind = entry.header.as_kind().ok_or_else(|| {
            let offset = self.entries[at].offset;
            GitError::malformed(format!("pack entry at offset {offset}: a delta where a whole object was"))
        })?;
        Ok((kind, data))
    }

    /// The object made by applying the delta at `at`, the `depth`th of its chain, to `base`.
    fn apply_delta(&mut self, at: usize, base: &[u8], depth: u32) -> Result<Vec<u8>, GitError> {
        let offset = self.entries[at].offset;
        if depth > self.max_delta_chain {
            return Err(GitError::size(
                Limit::DeltaChain,
                self.max_delta_chain.into(),
                Some(depth.into()),
                format!("pack entry at offset {offset}"),
            ));
        }
        self.longest = self.longest.max(depth);
        let (_, instructions) = self.inflate_entry(at)?;
        delta::apply(base, &instructions, self.max_object_size).map_err(|err| match err {
            DeltaError::Malformed(_) => GitError::malformed(format!("pack entry at offset {offset}: {err}")),
            DeltaError::TooLarge { declared } | DeltaError::OutOfMemory { declared } => GitError::size(
                Limit::ObjectSize,
                self.max_object_size,
                Some(declared),
                format!("the delta at offset {offset}"),
            ),
        })
    }

    /// Reads the entry at `at` and inflates its data (sizes were checked as it streamed in).
    fn inflate_entry(&mut self, at: usize) -> Result<(gix_pack::data::Entry, Vec<u8>), GitError> {
        let offset = self.entries[at].offset;
        let failed = |e: gix_error::Error| GitError::malformed(format!("pack entry at offset {offset}: {e}"));
        let entry = self.pack.entry(offset).map_err(failed)?;
        let size = usize::try_from(entry.decompressed_size).map_err(|_| {
            GitError::size(Limit::ObjectSize, self.max_object_size, Some(entry.decompressed_size), "pack entry")
        })?;
        let mut data = Vec::new();
        data.try_reserve_exact(size).map_err(|_| {
            GitError::size(
                Limit::ObjectSize,
                self.max_object_size,
                Some(entry.decompressed_size),
                format!("pack entry at offset {offset}"),
            )
        })?;
        data.resize(size, 0);
        self.pack.decompress_entry(&entry, &mut self.inflate, &mut data).map_err(failed)?;
        Ok((entry, data))
    }
}

/// The id of an object of `kind` with content `data`, found at pack offset `offset`.
fn hash(hash_kind: gix_hash::Kind, kind: gix_object::Kind, data: &[u8], offset: u64) -> Result<ObjectId, GitError> {
    gix_object::compute_hash(hash_kind, kind, data)
        .map_err(|e| GitError::malformed(format!("pack entry at offset {offset}: {e}")))
}

/// Writes the version 2 index of the pack whose entries are `entries` with ids `ids` and
/// whose trailing checksum is `pack_checksum`, to a new file at `path`.
pub(super) fn write_index(
    path: &Path,
    entries: &[PackedEntry],
    ids: &[ObjectId],
    pack_checksum: &ObjectId,
) -> Result<(), GitError> {
    let io = |e| GitError::io(path, e);
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|a, b| ids[*a].cmp(&ids[*b]).then(entries[*a].offset.cmp(&entries[*b].offset)));
    let file = File::options().write(true).create_new(true).open(path).map_err(io)?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(64 << 10, file),
        hasher: gix_hash::hasher(pack_checksum.kind()),
    };
    out.write_all(b"\xfftOc\0\0\0\x02").map_err(io)?;
    let mut fan_out = [0u32; 256];
    for id in ids {
        fan_out[usize::from(id.first_byte())] += 1;
    }
    let mut total = 0u32;
    for count in fan_out {
        total += count;
        out.write_all(&total.to_be_bytes()).map_err(io)?;
    }
    for &at in &order {
        out.write_all(ids[at].as_slice()).map_err(io)?;
    }
    for &at in &order {
        out.write_all(&entries[at].crc32.to_be_bytes()).map_err(io)?;
    }
    let mut large = Vec::new();
    for &at in &order {
        let offset = entries[at].offset;
        let small = match u32::try_from(offset) {
            Ok(small) if small < LARGE_OFFSET => small,
            _ => {
                large.push(offset);
                LARGE_OFFSET | (large.len() - 1) as u32
            }
        };
        out.write_all(&small.to_be_bytes()).map_err(io)?;
    }
    for offset in large {
        out.write_all(&offset.to_be_bytes()).map_err(io)?;
    }
    out.write_all(pack_checksum.as_slice()).map_err(io)?;
    let HashingWriter { mut inner, hasher } = out;
    let checksum = hasher.try_finalize().map_err(|e| GitError::Store { detail: format!("{}: {e}", path.display()) })?;
    inner.write_all(checksum.as_slice()).and_then(|()| inner.flush()).map_err(io)
}

/// Offsets from here on go into the index's table of 64-bit offsets; the 32-bit entry then
/// holds this bit and the position in that table.
const LARGE_OFFSET: u32 = 0x8000_0000;

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: gix_hash::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
