//! Pack import: full and thin packs, prerequisites, limits, truncation and junk.

use ferry_proto::Reason;
use gix_hash::Kind;

use super::{empty_store, oid, pack_files, sample_repo, store_with, Repo};
use crate::git::{GitError, GitLimits, Limit};

/// Two unrelated snapshots sharing most content, as consecutive releases do.
fn two_releases(kind: Kind) -> (Repo, String, String) {
    let (repo, _) = sample_repo(kind);
    let mut big: Vec<u8> = (0..4000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    repo.write("data/log.txt", &big);
    let c1 = repo.commit_all("with log");
    let first_with_log = repo.snapshot(&repo.tree_of(&c1), "release 1");
    big.extend_from_slice(b"one more line\n");
    repo.write("data/log.txt", &big);
    repo.write("config/app.toml", b"port = 9090\nname = \"demo\"\n");
    let c2 = repo.commit_all("change");
    let second = repo.snapshot(&repo.tree_of(&c2), "release 2");
    (repo, first_with_log, second)
}

#[test]
fn full_pack_imports_without_keep_file_and_reaches_the_tree() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let (repo, snapshot) = sample_repo(kind);
        let (_dir, store) = empty_store(&repo);
        let outcome =
            store.import_pack(&mut &repo.pack_full(&snapshot)[..], &[], &GitLimits::default()).expect("import");
        assert!(outcome.objects_written > 10);
        assert_eq!(outcome.objects_in_stream, outcome.objects_written);
        let files = pack_files(&store);
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files.iter().all(|f| f.ends_with(".pack") || f.ends_with(".idx")), "{files:?}");
        assert!(store.contains(&oid(&snapshot)));
        assert_eq!(store.commit_tree(&oid(&snapshot)).expect("tree"), oid(&repo.tree_of(&snapshot)));
    }
}

#[test]
fn thin_delta_imports_into_a_store_holding_its_base() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let (repo, first, second) = two_releases(kind);
        let (_dir, store) = store_with(&repo, &first);
        let thin = repo.pack_thin(&second, &first);
        let outcome = store.import_pack(&mut &thin[..], &[oid(&first)], &GitLimits::default()).expect("thin import");
        assert!(outcome.objects_written > outcome.objects_in_stream, "thin bases must be copied in: {outcome:?}");
        assert!(outcome.longest_delta_chain >= 1);
        let tree = store.commit_tree(&oid(&second)).expect("tree");
        crate::git::validate_tree(&store, &tree, &GitLimits::default()).expect("complete and valid");
    }
}

#[test]
fn thin_delta_into_an_empty_store_is_a_missing_prerequisite() {
    let (repo, first, second) = two_releases(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    let thin = repo.pack_thin(&second, &first);
    let err = store.import_pack(&mut &thin[..], &[oid(&first)], &GitLimits::default()).expect_err("no base");
    assert!(matches!(err, GitError::MissingPrerequisite { id } if id == oid(&first)), "{err}");
    assert_eq!(err.reason(), Reason::MissingPrerequisite);
    assert!(pack_files(&store).is_empty());

    // Without the prerequisite declared, gix itself cannot resolve the deltas.
    let err = store.import_pack(&mut &thin[..], &[], &GitLimits::default()).expect_err("no base");
    assert!(matches!(err, GitError::ThinBaseMissing { .. }), "{err}");
    assert_eq!(err.reason(), Reason::MissingObject);
    assert!(pack_files(&store).iter().all(|f| !f.ends_with(".pack")));
}

#[test]
fn truncated_packs_are_malformed() {
    let (repo, snapshot) = sample_repo(Kind::Sha1);
    let pack = repo.pack_full(&snapshot);
    for cut in [pack.len() - 1, pack.len() - 20, pack.len() / 2, 13, 11, 0] {
        let (_dir, store) = empty_store(&repo);
        let err = store.import_pack(&mut &pack[..cut], &[], &GitLimits::default()).expect_err("truncated");
        assert_eq!(err.reason(), Reason::Malformed, "cut at {cut}: {err}");
        assert!(pack_files(&store).is_empty(), "cut at {cut}: {:?}", pack_files(&store));
    }
}

#[test]
fn junk_after_the_pack_is_refused_and_the_pack_removed() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let (repo, snapshot) = sample_repo(kind);
        let pack = repo.pack_full(&snapshot);
        for junk in [1usize, 4, 63, 64, 65, 100, 9000, 200_000] {
            let (_dir, store) = empty_store(&repo);
            let mut stream = pack.clone();
            stream.extend(std::iter::repeat_n(b'J', junk));
            let err = store.import_pack(&mut &stream[..], &[], &GitLimits::default()).expect_err("junk");
            assert!(matches!(&err, GitError::Malformed { detail } if detail.contains("junk")), "{junk} bytes: {err}");
            assert!(pack_files(&store).is_empty(), "{junk} bytes: {:?}", pack_files(&store));
        }
    }
}

#[test]
fn a_bit_flip_fails_the_checksum() {
    let (repo, snapshot) = sample_repo(Kind::Sha1);
    let mut pack = repo.pack_full(&snapshot);
    let last = pack.len() - 1;
    pack[last] ^= 1;
    let (_dir, store) = empty_store(&repo);
    let err = store.import_pack(&mut &pack[..], &[], &GitLimits::default()).expect_err("bad checksum");
    assert_eq!(err.reason(), Reason::Malformed, "{err}");
}

#[test]
fn object_count_is_checked_from_the_header_before_reading() {
    // A header declaring a billion objects and nothing after it: the count is refused
    // before the missing objects could be noticed.
    let mut header = b"PACK\0\0\0\x02".to_vec();
    header.extend_from_slice(&1_000_000_000u32.to_be_bytes());
    let repo = Repo::new(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    let err = store.import_pack(&mut &header[..], &[], &GitLimits::default()).expect_err("too many objects");
    assert!(matches!(err, GitError::SizeExceeded { limit: Limit::Objects, found: Some(1_000_000_000), .. }), "{err}");

    let (repo, snapshot) = sample_repo(Kind::Sha1);
    let limits = GitLimits { max_objects: 3, ..GitLimits::default() };
    let err = store.import_pack(&mut &repo.pack_full(&snapshot)[..], &[], &limits).expect_err("too many objects");
    assert_eq!(err.reason(), Reason::SizeExceeded);
}

#[test]
fn stream_object_size_and_delta_chain_limits_apply() {
    let (repo, first, second) = two_releases(Kind::Sha1);
    let full = repo.pack_full(&first);

    let limits = GitLimits { max_total_bytes: 1000, ..GitLimits::default() };
    let (_dir, store) = empty_store(&repo);
    let err = store.import_pack(&mut &full[..], &[], &limits).expect_err("stream cap");
    assert!(matches!(err, GitError::SizeExceeded { limit: Limit::TotalBytes, .. }), "{err}");

    let limits = GitLimits { max_object_size: 1000, ..GitLimits::default() };
    let err = store.import_pack(&mut &full[..], &[], &limits).expect_err("object cap");
    assert!(matches!(err, GitError::SizeExceeded { limit: Limit::ObjectSize, .. }), "{err}");
    assert!(pack_files(&store).iter().all(|f| !f.ends_with(".pack")));

    // The thin pack holds deltas against the first release: a chain of at least one.
    let (_dir, store) = store_with(&repo, &first);
    let before = pack_files(&store);
    let limits = GitLimits { max_delta_chain: 0, ..GitLimits::default() };
    let thin = repo.pack_thin(&second, &first);
    let err = store.import_pack(&mut &thin[..], &[oid(&first)], &limits).expect_err("chain cap");
    assert!(matches!(err, GitError::SizeExceeded { limit: Limit::DeltaChain, .. }), "{err}");
    assert_eq!(pack_files(&store), before, "the rejected pack is removed again");
}

#[test]
fn importing_the_same_pack_twice_is_harmless() {
    let (repo, snapshot) = sample_repo(Kind::Sha1);
    let pack = repo.pack_full(&snapshot);
    let (_dir, store) = empty_store(&repo);
    store.import_pack(&mut &pack[..], &[], &GitLimits::default()).expect("first");
    let again = store.import_pack(&mut &pack[..], &[], &GitLimits::default()).expect("second");
    assert_eq!(pack_files(&store).len(), 2);
    assert!(again.pack_path.is_some());
}

#[test]
fn commit_tree_refuses_non_commits_and_missing_objects() {
    let (repo, snapshot) = sample_repo(Kind::Sha1);
    let (_dir, store) = store_with(&repo, &snapshot);
    let tree = repo.tree_of(&snapshot);
    let err = store.commit_tree(&oid(&tree)).expect_err("a tree");
    assert!(matches!(err, GitError::MissingObject { found: Some(gix_object::Kind::Tree), .. }), "{err}");
    let absent = oid("1111111111111111111111111111111111111111");
    let err = store.commit_tree(&absent).expect_err("absent");
    assert!(matches!(err, GitError::MissingObject { found: None, .. }), "{err}");
    assert_eq!(err.reason(), Reason::MissingObject);
}

#[test]
fn a_source_handing_out_few_bytes_at_a_time_works_and_junk_is_still_seen() {
    let (repo, first, second) = two_releases(Kind::Sha1);
    let (_dir, store) = store_with(&repo, &first);
    let thin = repo.pack_thin(&second, &first);
    for capacity in [1, 3, 7, 12, 13] {
        let mut junk = thin.clone();
        junk.push(b'!');
        let mut reader = std::io::BufReader::with_capacity(capacity, &junk[..]);
        let err = store.import_pack(&mut reader, &[oid(&first)], &GitLimits::default()).expect_err("junk");
        assert!(matches!(&err, GitError::Malformed { detail } if detail.contains("junk")), "{err}");
    }
    let mut reader = std::io::BufReader::with_capacity(5, &thin[..]);
    let outcome = store.import_pack(&mut reader, &[oid(&first)], &GitLimits::default()).expect("import");
    assert_eq!(outcome.bytes_read, thin.len() as u64);
}

#[test]
fn leftovers_of_an_interrupted_import_are_removed() {
    let (repo, snapshot) = sample_repo(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    let outcome = store.import_pack(&mut &repo.pack_full(&snapshot)[..], &[], &GitLimits::default()).expect("import");
    let pack = outcome.pack_path.expect("pack");
    std::fs::write(pack.with_extension("keep"), b"").expect("keep");
    std::fs::write(store.objects_dir().join("pack/.tmpAbC123"), b"partial").expect("tmp");
    assert_eq!(store.remove_interrupted_imports().expect("cleanup"), 2);
    assert!(pack_files(&store).is_empty(), "{:?}", pack_files(&store));
    assert_eq!(store.remove_interrupted_imports().expect("cleanup"), 0);
}

/// A one-blob pack whose entry declares `declared` bytes and carries `zlib` as its stream.
fn one_entry_pack(declared: u64, zlib: &[u8]) -> Vec<u8> {
    let mut pack = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
    gix_pack::data::entry::Header::Blob.write_to(declared, &mut pack).expect("entry header");
    pack.extend_from_slice(zlib);
    let mut hash = gix_hash::hasher(Kind::Sha1);
    hash.update(&pack);
    pack.extend_from_slice(hash.try_finalize().expect("sha1").as_slice());
    pack
}

/// `data` as a zlib stream at `level`.
fn zlib(data: &[u8], level: i32) -> Vec<u8> {
    use std::io::Write;
    let level = gix_zlib::Compression::new(level).expect("level 0-9");
    let mut out = gix_zlib::stream::deflate::Write::new(Vec::new(), level);
    out.write_all(data).and_then(|()| out.flush()).expect("deflate");
    out.into_inner()
}

#[test]
fn a_zlib_stream_padded_past_what_its_object_needs_is_refused_and_nothing_is_left() {
    let (repo, _) = sample_repo(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    let honest = zlib(b"port = 9090\n", 0);
    let outcome = store.import_pack(&mut &one_entry_pack(12, &honest)[..], &[], &GitLimits::default());
    assert_eq!(outcome.expect("the honest stored stream imports").objects_written, 1);
    let before = pack_files(&store);

    // The same stream with 64 KiB of empty stored blocks after the zlib header.
    let mut padded = honest[..2].to_vec();
    for _ in 0..(64 << 10) / 5 {
        padded.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
    }
    padded.extend_from_slice(&honest[2..]);
    let err = store.import_pack(&mut &one_entry_pack(12, &padded)[..], &[], &GitLimits::default()).expect_err("padded");
    assert_eq!(err.reason(), Reason::Malformed, "{err}");
    assert!(
        err.to_string().contains("its zlib stream is longer than 76 bytes, more than a 12-byte object can need"),
        "{err}"
    );
    assert_eq!(pack_files(&store), before, "no pack and no temporary file is left");
}

#[test]
fn an_entry_inflating_to_more_or_less_than_it_declares_is_refused() {
    let (repo, _) = sample_repo(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    for (declared, needle) in [(11, "inflates to more than its declared 11 bytes"), (13, "inflates to 12 bytes, not")] {
        let pack = one_entry_pack(declared, &zlib(b"port = 9090\n", 6));
        let err = store.import_pack(&mut &pack[..], &[], &GitLimits::default()).expect_err("size mismatch");
        assert!(err.to_string().contains(needle), "{err}");
        assert_eq!(pack_files(&store), Vec::<String>::new());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// zlib at any level, on any data, stays within the bound the importer enforces.
    #[test]
    fn every_zlib_level_stays_within_the_compressed_bound(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70_000),
        level in 0i32..=9,
    ) {
        let bound = crate::git::pack_stream::compressed_bound(data.len() as u64);
        proptest::prop_assert!(zlib(&data, level).len() as u64 <= bound);
    }
}

#[test]
fn bad_pack_headers_are_refused_in_one_readable_line() {
    let (repo, _) = super::sample_repo(gix_hash::Kind::Sha1);
    let (_dir, store) = super::empty_store(&repo);
    for (header, says) in [
        (&b"PACK\x00\x00\x00\x09\x00\x00\x00\x01"[..], "pack header: Unsupported pack version: 9"),
        (&b"PACX\x00\x00\x00\x02\x00\x00\x00\x01"[..], "pack header: Pack data type not recognized"),
    ] {
        let mut pack = header.to_vec();
        pack.extend_from_slice(&[0u8; 40]);
        let err = store.import_pack(&mut &pack[..], &[], &crate::git::GitLimits::default()).expect_err("refused");
        assert_eq!(err.reason(), ferry_proto::Reason::Malformed, "{err}");
        let text = err.to_string();
        assert!(text.ends_with(says) && !text.contains('{') && !text.contains('\n'), "{text}");
    }
}
