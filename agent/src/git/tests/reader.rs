//! The pack reader against git: every object of a store holding a full pack and a thin
//! one imported on top, deltas of both kinds included, reads back byte for byte and with
//! the header git reports, without gix's mapping of the packs.

use gix_hash::Kind;
use gix_object::Kind as ObjectKind;

use super::{empty_store, oid, Repo};
use crate::git::pack_reader::PackReader;
use crate::git::{GitError, GitLimits, ObjectStore};

/// A repository whose two commits hold files similar enough for git to store deltas.
fn similar_files(kind: Kind) -> (Repo, String, String) {
    let repo = Repo::new(kind);
    let paragraph =
        |i: usize| format!("[service-{i}]\nreplicas = 3\nimage = \"registry.local/app:{i}\"\nlog = \"info\"\n");
    let base: String = (0..400).map(paragraph).collect();
    for f in 0..12 {
        repo.write(&format!("conf/{f}.toml"), format!("{base}# file {f}\n").as_bytes());
    }
    let first = repo.commit_all("first");
    for f in (0..12).step_by(3) {
        repo.write(&format!("conf/{f}.toml"), format!("{base}# file {f}, edited\nreplicas = 5\n").as_bytes());
    }
    let second = repo.commit_all("second");
    (repo, first, second)
}

/// Every object git holds as `(id, kind, size)`.
fn objects_of(repo: &Repo) -> Vec<(String, String, u64)> {
    let listing =
        repo.git(&["cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype) %(objectsize)"]);
    listing
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let id = parts.next().expect("id").to_owned();
            let kind = parts.next().expect("kind").to_owned();
            (id, kind, parts.next().expect("size").parse().expect("size"))
        })
        .collect()
}

/// Ids of the delta entries in the store's packs, as `git verify-pack -v` reports them.
fn deltas_in(repo: &Repo, store: &ObjectStore) -> Vec<String> {
    let pack_dir = store.objects_dir().join("pack");
    let mut ids = Vec::new();
    for dirent in std::fs::read_dir(&pack_dir).expect("pack dir") {
        let idx = dirent.expect("dirent").path();
        if idx.extension().is_some_and(|e| e == "idx") {
            let out = repo.git(&["verify-pack", "-v", idx.to_str().expect("utf-8 path")]);
            // Delta lines have seven fields: id, kind, size, packed size, offset, depth, base.
            let deltas = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|f| f.len() == 7);
            ids.extend(deltas.map(|f| f[0].to_owned()));
        }
    }
    ids
}

#[test]
fn every_object_of_a_full_and_a_thin_pack_reads_back_as_git_has_it() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let (repo, first, second) = similar_files(kind);
        let (_dir, store) = empty_store(&repo);
        store.import_pack(&mut &repo.pack_full(&first)[..], &[], &GitLimits::default()).expect("full pack");
        // Read once before the second import: the reader must find the new pack's objects.
        store.commit_tree(&oid(&first)).expect("first tree");
        let thin = repo.pack_thin(&second, &first);
        store.import_pack(&mut &thin[..], &[oid(&first)], &GitLimits::default()).expect("thin pack");
        assert!(deltas_in(&repo, &store).len() >= 4, "the store holds deltas");
        let mut buf = Vec::new();
        for (id, kind_name, size) in objects_of(&repo) {
            let expected = ObjectKind::from_bytes(kind_name.as_bytes()).expect("kind");
            let header = store.header(&oid(&id)).expect("header").expect("present");
            assert_eq!((header.kind, header.size), (expected, size), "{id}");
            let data = store.read_object(&oid(&id), expected, size, None, &mut buf).expect("read");
            assert!(data == repo.git_bytes(&["cat-file", &kind_name, &id], b"").as_slice(), "{id} differs");
        }
    }
}

#[test]
fn an_object_over_the_size_asked_for_is_refused_in_one_line() {
    let (repo, _, second) = similar_files(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    store.import_pack(&mut &repo.pack_full(&second)[..], &[], &GitLimits::default()).expect("full pack");
    let delta = deltas_in(&repo, &store).into_iter().next().expect("a delta");
    let whole = objects_of(&repo).into_iter().map(|(id, _, _)| id).find(|id| *id != delta).expect("another object");
    let mut reader = PackReader::new(&store);
    for id in [delta, whole] {
        let size = reader.header(&oid(&id)).expect("header").expect("packed").size;
        let mut buf = Vec::new();
        let err = reader.read(&oid(&id), size - 1, &mut buf).expect_err("one byte too large");
        assert!(matches!(err, GitError::SizeExceeded { .. }), "{id}: {err}");
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
        assert!(buf.is_empty(), "nothing read");
        assert_eq!(
            reader.read(&oid(&id), size, &mut buf).expect("read"),
            store.header(&oid(&id)).expect("h").map(|h| h.kind)
        );
    }
}
