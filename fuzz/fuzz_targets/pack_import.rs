//! The agent's pack import (`ObjectStore::import_pack`): the streaming entry reader of
//! `agent/src/git/pack_stream.rs`, and the delta resolution and index writer of
//! `agent/src/git/pack_index.rs` (with the delta applier of `agent/src/git/delta.rs`)
//! behind it.
//!
//! The input is a pack body after a pack header with an arbitrary object count; when
//! `checksum` is set the target appends the body's correct SHA-1 trailer, so inputs get past
//! the checksum and into delta resolution and indexing. It is imported into a fresh object
//! store in `$TMPDIR` under small limits.
//!
//! Properties: no panic; a refused pack leaves `objects/pack` exactly as it was (no pack,
//! index or temporary file); an accepted one is a pack and its index, and every entry the
//! header declared was written.
#![no_main]

use arbitrary::Arbitrary;
use ferry_agent::git::{GitLimits, ObjectStore};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    count: u8,
    checksum: bool,
    body: Vec<u8>,
}

fn limits() -> GitLimits {
    GitLimits {
        max_objects: 64,
        max_object_size: 64 << 10,
        max_delta_chain: 16,
        max_tree_depth: 5,
        max_path_len: 48,
        max_tree_entries: 40,
        max_total_bytes: 256 << 10,
    }
}

fn pack_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("pack dir")
        .map(|e| e.expect("dirent").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fuzz_target!(|input: Input| {
    let mut pack = b"PACK\0\0\0\x02\0\0\0".to_vec();
    pack.push(input.count);
    pack.extend_from_slice(&input.body);
    if input.checksum {
        let mut hash = gix_hash::hasher(gix_hash::Kind::Sha1);
        hash.update(&pack);
        pack.extend_from_slice(hash.try_finalize().expect("sha1").as_slice());
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let objects = tmp.path().join("objects");
    std::fs::create_dir_all(objects.join("pack")).expect("mkdir objects/pack");
    let store = ObjectStore::open(&objects, gix_hash::Kind::Sha1).expect("open store");
    match store.import_pack(&mut &pack[..], &[], &limits()) {
        Err(e) => {
            let _ = (e.to_string(), e.reason());
            assert_eq!(pack_files(&objects.join("pack")), Vec::<String>::new(), "a refused pack left files: {e}");
        }
        Ok(outcome) => {
            assert_eq!(outcome.objects_in_stream, u32::from(input.count));
            assert!(outcome.objects_written >= outcome.objects_in_stream);
            let files = pack_files(&objects.join("pack"));
            if outcome.objects_written == 0 {
                assert!(files.is_empty(), "{files:?}");
            } else {
                assert_eq!(files.len(), 2, "{files:?}");
                assert!(outcome.pack_path.as_deref().is_some_and(std::path::Path::is_file));
            }
        }
    }
});
