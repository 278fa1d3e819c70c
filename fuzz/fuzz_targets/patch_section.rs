//! The patch section after a pack (`agent/src/git/pack_stream/patches.rs`), checked against
//! an oracle: the `bsdiff` crate's own applier run on the same base.
//!
//! The store holds one base blob (chosen by the input). The stream is an empty pack, then a
//! section of one patch whose framing the input shapes: the declared size and length are
//! the true ones or off by a little, and the target id is the id of what the oracle makes
//! (so the fuzzer reaches acceptance) or a wrong one; trailing bytes may follow.
//!
//! Properties: no panic; the import accepts exactly when the oracle applies the patch to
//! exactly the declared size and length, the id is right and nothing trails; an accepted
//! import holds the blob, a refused one leaves `objects/pack` as it was.
#![no_main]

use arbitrary::Arbitrary;
use ferry_agent::git::{GitLimits, ObjectStore};
use ferry_proto::patch_section::{max_patch_len, write_patch_header, write_section_start, PatchHeader};
use gix_hash::Kind;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    base: Vec<u8>,
    patch: Vec<u8>,
    size_off: i8,
    len_off: i8,
    right_id: bool,
    trailing: Vec<u8>,
}

const MAX_OBJECT: u64 = 16 << 10;

/// A pack with `blobs` as full entries stored in zlib's stored blocks, or none.
fn pack(blobs: &[&[u8]]) -> Vec<u8> {
    let mut pack = b"PACK\0\0\0\x02".to_vec();
    pack.extend_from_slice(&(blobs.len() as u32).to_be_bytes());
    for blob in blobs {
        let mut size = blob.len();
        let mut byte = (3u8 << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        pack.extend_from_slice(&[0x78, 0x01]);
        let mut chunks = blob.chunks(0xffff).peekable();
        if chunks.peek().is_none() {
            pack.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        while let Some(chunk) = chunks.next() {
            pack.push(u8::from(chunks.peek().is_none()));
            let len = chunk.len() as u16;
            pack.extend_from_slice(&len.to_le_bytes());
            pack.extend_from_slice(&(!len).to_le_bytes());
            pack.extend_from_slice(chunk);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for byte in blob.iter() {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        pack.extend_from_slice(&((b << 16) | a).to_be_bytes());
    }
    let mut hash = gix_hash::hasher(Kind::Sha1);
    hash.update(&pack);
    pack.extend_from_slice(hash.try_finalize().expect("sha1").as_slice());
    pack
}

fn pack_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).expect("pack dir").map(|e| e.expect("dirent").file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn off(value: u64, by: i8) -> u64 {
    value.saturating_add_signed(i64::from(by))
}

fuzz_target!(|input: Input| {
    if input.base.len() as u64 > MAX_OBJECT || input.patch.len() > 4096 {
        return;
    }
    let limits = GitLimits { max_objects: 8, max_object_size: MAX_OBJECT, ..GitLimits::default() };
    let tmp = tempfile::tempdir().expect("tempdir");
    let objects = tmp.path().join("objects");
    let store = ObjectStore::open(&objects, Kind::Sha1).expect("open store");
    store.import_pack(&mut &pack(&[&input.base])[..], &[], &limits).expect("the base imports");
    let before = pack_files(&objects.join("pack"));

    // What follows the framing, and the part of it the declared length makes the patch.
    let after = [input.patch.as_slice(), input.trailing.as_slice()].concat();
    let patch_len = off(input.patch.len() as u64, input.len_off);
    let patch = &after[..(patch_len as usize).min(after.len())];
    let mut made = Vec::new();
    let oracle = bsdiff::patch(&input.base, &mut &patch[..], &mut made);
    let base_id = gix_object::compute_hash(Kind::Sha1, gix_object::Kind::Blob, &input.base).expect("hash");
    let made_id = gix_object::compute_hash(Kind::Sha1, gix_object::Kind::Blob, &made).expect("hash");
    let mut target = made_id.as_slice().to_vec();
    if !input.right_id {
        target[0] ^= 1;
    }
    let header = PatchHeader {
        target,
        base: base_id.as_slice().to_vec(),
        target_size: off(made.len() as u64, input.size_off),
        patch_len,
    };
    let mut stream = pack(&[]);
    write_section_start(&mut stream, 1).expect("write");
    write_patch_header(&mut stream, &header).expect("write");
    stream.extend_from_slice(&after);

    let expected = oracle.is_ok()
        && input.right_id
        && patch_len == after.len() as u64
        && header.target_size == made.len() as u64
        && header.target_size <= MAX_OBJECT
        && patch_len <= max_patch_len(header.target_size);
    match store.import_pack(&mut &stream[..], &[], &limits) {
        Ok(_) => {
            assert!(expected, "accepted what the oracle refuses: {oracle:?} {header:?}");
            assert!(store.contains(&made_id));
        }
        Err(e) => {
            let _ = (e.to_string(), e.reason());
            assert!(!expected, "refused what the oracle accepts: {e}");
            assert_eq!(pack_files(&objects.join("pack")), before, "a refused import left files: {e}");
        }
    }
});
