//! Delta resolution and index writing of an import (`git/pack_index.rs`): the index is what
//! `git index-pack` writes for the same pack, deltas resolve whatever order their bases come
//! in, and every delta that lies is refused with nothing left behind.

use std::io::Write;

use ferry_proto::Reason;
use gix_hash::{Kind, ObjectId};
use gix_pack::data::entry::Header;

use super::{empty_store, oid, pack_files, store_with, Repo};
use crate::git::delta::tests::encode_size;
use crate::git::{GitError, GitLimits, Limit, ObjectStore};

/// Asserts that the store's one imported pack has the index `git index-pack` makes of it.
fn assert_index_is_gits(repo: &Repo, store: &ObjectStore, pack: &std::path::Path) {
    let idx = pack.with_extension("idx");
    let theirs = repo.work.join("theirs.idx");
    let _ = std::fs::remove_file(&theirs);
    repo.git(&["index-pack", "-o", theirs.to_str().expect("utf8"), pack.to_str().expect("utf8")]);
    let ours = std::fs::read(&idx).expect("our idx");
    assert!(ours == std::fs::read(&theirs).expect("git's idx"), "{} differs from git's", idx.display());
    assert!(store.objects_dir().join("pack").join(idx.file_name().expect("name")).is_file());
}

/// A repository whose snapshots have files much alike, so that git packs them as deltas.
fn repo_with_deltas(kind: Kind) -> (Repo, String, String) {
    let repo = Repo::new(kind);
    let mut text: Vec<u8> = (0..3000).flat_map(|i| format!("setting_{i} = {}\n", i * 7).into_bytes()).collect();
    for copy in 0..4 {
        text.extend_from_slice(format!("copy {copy}\n").as_bytes());
        repo.write(&format!("etc/copy-{copy}.conf"), &text);
    }
    let first = repo.commit_all("first");
    text.extend_from_slice(b"one more setting\n");
    repo.write("etc/copy-0.conf", &text);
    repo.write("etc/copy-9.conf", &text);
    let second = repo.commit_all("second");
    (repo, first, second)
}

#[test]
fn the_index_is_byte_for_byte_what_git_index_pack_writes() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let (repo, first, second) = repo_with_deltas(kind);
        let (_dir, store) = store_with(&repo, &first);
        let full = store.import_pack(&mut &repo.pack_full(&first)[..], &[], &GitLimits::default()).expect("full");
        assert!(full.longest_delta_chain >= 1, "the full pack has deltas: {full:?}");
        assert_index_is_gits(&repo, &store, full.pack_path.as_deref().expect("a pack"));

        let thin = repo.pack_thin(&second, &first);
        let delta = store.import_pack(&mut &thin[..], &[oid(&first)], &GitLimits::default()).expect("thin");
        assert!(delta.objects_written > delta.objects_in_stream, "bases appended: {delta:?}");
        assert_index_is_gits(&repo, &store, delta.pack_path.as_deref().expect("a pack"));
        let tree = store.commit_tree(&oid(&second)).expect("tree");
        crate::git::validate_tree(&store, &tree, &GitLimits::default()).expect("complete");
    }
}

/// A delta making `base` followed by `tail`.
fn delta_appending(base: &[u8], tail: &[u8], result_len: Option<u64>) -> Vec<u8> {
    let mut delta = Vec::new();
    encode_size(base.len() as u64, &mut delta);
    encode_size(result_len.unwrap_or((base.len() + tail.len()) as u64), &mut delta);
    let len = base.len() as u32;
    delta.extend_from_slice(&[0x80 | 0x10 | 0x20 | 0x40, len as u8, (len >> 8) as u8, (len >> 16) as u8]);
    for chunk in tail.chunks(127) {
        delta.push(chunk.len() as u8);
        delta.extend_from_slice(chunk);
    }
    delta
}

/// One entry of a pack made by hand.
enum Raw {
    Blob(Vec<u8>),
    RefDelta(ObjectId, Vec<u8>),
    /// A delta against the entry at this index.
    OfsDelta(usize, Vec<u8>),
}

/// A SHA-1 pack of `entries`, each deflated.
fn raw_pack(entries: &[Raw]) -> Vec<u8> {
    let mut pack = b"PACK\0\0\0\x02".to_vec();
    pack.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    let mut offsets = Vec::new();
    for entry in entries {
        let at = pack.len() as u64;
        offsets.push(at);
        let (header, data) = match entry {
            Raw::Blob(data) => (Header::Blob, data),
            Raw::RefDelta(base_id, data) => (Header::RefDelta { base_id: *base_id }, data),
            Raw::OfsDelta(base, data) => (Header::OfsDelta { base_distance: at - offsets[*base] }, data),
        };
        header.write_to(data.len() as u64, &mut pack).expect("entry header");
        let mut deflate =
            gix_zlib::stream::deflate::Write::new(&mut pack, gix_zlib::Compression::new(1).expect("level 1"));
        deflate.write_all(data).and_then(|()| deflate.flush()).expect("deflate");
    }
    let mut hash = gix_hash::hasher(Kind::Sha1);
    hash.update(&pack);
    pack.extend_from_slice(hash.try_finalize().expect("sha1").as_slice());
    pack
}

fn blob_id(data: &[u8]) -> ObjectId {
    gix_object::compute_hash(Kind::Sha1, gix_object::Kind::Blob, data).expect("hash")
}

fn read_blob(store: &ObjectStore, id: &ObjectId) -> Vec<u8> {
    let mut buf = Vec::new();
    store.read_object(id, gix_object::Kind::Blob, 1 << 20, None, &mut buf).expect("blob").to_vec()
}

#[test]
fn a_ref_delta_may_come_before_its_base_and_carry_a_chain() {
    let base = b"first line\nsecond line\n".to_vec();
    let middle = [&base[..], b"third line\n"].concat();
    let top = [&middle[..], b"fourth line\n"].concat();
    // The delta comes first, naming a base that only comes last; an offset delta builds on it.
    let pack = raw_pack(&[
        Raw::RefDelta(blob_id(&base), delta_appending(&base, b"third line\n", None)),
        Raw::OfsDelta(0, delta_appending(&middle, b"fourth line\n", None)),
        Raw::Blob(base.clone()),
    ]);
    let repo = Repo::new(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    let outcome = store.import_pack(&mut &pack[..], &[], &GitLimits::default()).expect("import");
    assert_eq!((outcome.objects_written, outcome.longest_delta_chain), (3, 2));
    for data in [&base, &middle, &top] {
        assert_eq!(&read_blob(&store, &blob_id(data)), data);
    }
    assert_index_is_gits(&repo, &store, outcome.pack_path.as_deref().expect("a pack"));

    let limits = GitLimits { max_delta_chain: 1, ..GitLimits::default() };
    let (_dir, store) = empty_store(&repo);
    let err = store.import_pack(&mut &pack[..], &[], &limits).expect_err("chain of two");
    assert!(matches!(err, GitError::SizeExceeded { limit: Limit::DeltaChain, found: Some(2), .. }), "{err}");
    assert!(pack_files(&store).is_empty());
}

#[test]
fn deltas_that_lie_are_refused_in_one_line_and_nothing_is_left() {
    let base = b"0123456789abcdef".to_vec();
    let absent = blob_id(b"not in this pack");
    let bad_copy = {
        let mut delta = delta_appending(&base, b"", None);
        delta[2] = 0x80 | 0x01 | 0x10; // copy 16 bytes from offset 16: past the base's end
        delta.truncate(3);
        delta.extend_from_slice(&[16, 16]);
        delta
    };
    let missing = format!("needs object {absent}, which is neither in the pack nor in the store");
    let second = raw_pack(&[Raw::Blob(base.clone())]).len() - 20;
    let wrong_base =
        format!("pack entry at offset {second}: malformed delta: it declares a base of 4 bytes, its base has 16");
    let too_large = format!("object size limit of 4096 exceeded (5000) at the delta at offset {second}");
    let cases: Vec<(Vec<Raw>, Reason, &str)> = vec![
        (vec![Raw::RefDelta(absent, delta_appending(&base, b"x", None))], Reason::MissingObject, &missing),
        (
            vec![Raw::Blob(base.clone()), Raw::OfsDelta(0, delta_appending(b"0123", b"x", None))],
            Reason::Malformed,
            &wrong_base,
        ),
        (
            vec![Raw::Blob(base.clone()), Raw::OfsDelta(0, bad_copy)],
            Reason::Malformed,
            "malformed delta: it copies 16 bytes at 16 from a 16-byte base",
        ),
        (
            vec![Raw::Blob(base.clone()), Raw::OfsDelta(0, delta_appending(&base, b"xyz", Some(18)))],
            Reason::Malformed,
            "malformed delta: its instructions make more than the declared 18 bytes",
        ),
        (
            vec![Raw::Blob(base.clone()), Raw::OfsDelta(0, delta_appending(&base, b"x", Some(5000)))],
            Reason::SizeExceeded,
            &too_large,
        ),
    ];
    let limits = GitLimits { max_object_size: 4096, ..GitLimits::default() };
    let repo = Repo::new(Kind::Sha1);
    for (entries, reason, says) in cases {
        let (_dir, store) = empty_store(&repo);
        let err = store.import_pack(&mut &raw_pack(&entries)[..], &[], &limits).expect_err(says);
        let text = err.to_string();
        assert!(err.reason() == reason && text.contains(says) && !text.contains('\n'), "{reason:?} {says}: {text}");
        assert!(pack_files(&store).is_empty(), "{:?}", pack_files(&store));
    }
}

#[test]
fn an_offset_delta_must_point_at_an_entry() {
    let mut pack = raw_pack(&[Raw::Blob(b"abc".to_vec()), Raw::OfsDelta(0, delta_appending(b"abc", b"d", None))]);
    // The second entry's one-byte base distance, made one shorter: its base moves one byte
    // into the blob's entry.
    let second = raw_pack(&[Raw::Blob(b"abc".to_vec())]).len() - 20;
    assert_eq!(pack[second] >> 4 & 0x7, 6, "an offset delta's header");
    pack[second + 1] -= 1;
    let body = pack.len() - 20;
    let mut hash = gix_hash::hasher(Kind::Sha1);
    hash.update(&pack[..body]);
    pack.truncate(body);
    pack.extend_from_slice(hash.try_finalize().expect("sha1").as_slice());
    let repo = Repo::new(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    let err = store.import_pack(&mut &pack[..], &[], &GitLimits::default()).expect_err("no entry there");
    assert!(err.to_string().contains("its delta base at offset 13 is not an entry"), "{err}");
    assert!(pack_files(&store).is_empty());
}
