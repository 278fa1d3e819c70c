//! Checkout against `git archive`, raw bytes, containment, drift and pruning.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_proto::Reason;
use gix_hash::Kind;

use super::{empty_store, oid, sample_repo, snapshot_dir, store_with, Node, Repo};
use crate::git::{checkout, diff_dir_against_tree, validate_tree, DriftEntry, DriftKind, GitError, GitLimits};

fn checkout_snapshot(repo: &Repo, commit: &str, dest: &Path) -> crate::git::CheckoutStats {
    let (_dir, store) = store_with(repo, commit);
    let tree = store.commit_tree(&oid(commit)).expect("tree");
    let tree = validate_tree(&store, &tree, &GitLimits::default()).expect("valid");
    checkout(&store, &tree, dest).expect("checkout")
}

#[test]
fn checkout_equals_git_archive_for_sha1_and_sha256() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let (repo, snapshot) = sample_repo(kind);
        let out = tempfile::tempdir().expect("tempdir");
        let (ours, theirs) = (out.path().join("ours"), out.path().join("theirs"));
        std::fs::create_dir(&ours).expect("mkdir");
        let stats = checkout_snapshot(&repo, &snapshot, &ours);
        repo.archive_into(&snapshot, &theirs);

        let (ours_map, theirs_map) = (snapshot_dir(&ours), snapshot_dir(&theirs));
        assert_eq!(ours_map, theirs_map, "{kind:?}");
        assert_eq!(stats.files, 6);
        assert_eq!(stats.symlinks, 4);
        assert!(matches!(ours_map.get(Path::new("bin/start.sh")), Some(Node::File { executable: true, .. })));
        let mode = |p: &str| std::fs::metadata(ours.join(p)).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode("bin/start.sh"), 0o755);
        assert_eq!(mode("README.md"), 0o644);
        assert_eq!(mode("deep/a"), 0o755);
    }
}

#[test]
fn checkout_writes_raw_blob_bytes_whatever_gitattributes_say() {
    let repo = Repo::new(Kind::Sha1);
    repo.write(".gitattributes", b"* text eol=crlf\nid.txt ident\n");
    repo.write("lines.txt", b"one\ntwo\n");
    repo.write("id.txt", b"$Id$\n");
    let commit = repo.commit_all("attributes");
    let out = tempfile::tempdir().expect("tempdir");
    checkout_snapshot(&repo, &commit, out.path());
    for file in ["lines.txt", "id.txt", ".gitattributes"] {
        let blob = repo.git_bytes(&["cat-file", "blob", &format!("{commit}:{file}")], b"");
        assert_eq!(std::fs::read(out.path().join(file)).expect("read"), blob, "{file}");
    }
}

#[test]
fn checkout_leaves_nothing_outside_dest() {
    let (repo, snapshot) = sample_repo(Kind::Sha1);
    let outer = tempfile::tempdir().expect("tempdir");
    let dest = outer.path().join("slot");
    std::fs::create_dir(&dest).expect("mkdir");
    checkout_snapshot(&repo, &snapshot, &dest);
    let names: Vec<_> =
        std::fs::read_dir(outer.path()).expect("read_dir").map(|e| e.expect("dirent").file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("slot")]);
    // Every link resolves (when it resolves at all) inside the slot.
    let dest = dest.canonicalize().expect("canonical");
    for (path, node) in snapshot_dir(&dest) {
        if let Node::Symlink(_) = node {
            if let Ok(resolved) = dest.join(&path).canonicalize() {
                assert!(resolved.starts_with(&dest), "{}", path.display());
            }
        }
    }
}

#[test]
fn checkout_requires_an_empty_directory() {
    let (repo, snapshot) = sample_repo(Kind::Sha1);
    let (_dir, store) = store_with(&repo, &snapshot);
    let tree = store.commit_tree(&oid(&snapshot)).expect("tree");
    let tree = validate_tree(&store, &tree, &GitLimits::default()).expect("valid");
    let out = tempfile::tempdir().expect("tempdir");
    std::fs::write(out.path().join("stale"), b"x").expect("write");
    let err = checkout(&store, &tree, out.path()).expect_err("not empty");
    assert!(matches!(err, GitError::DestinationNotEmpty { .. }), "{err}");
    assert_eq!(err.reason(), Reason::Io);
    let err = checkout(&store, &tree, &out.path().join("absent")).expect_err("absent");
    assert_eq!(err.reason(), Reason::Io);
}

#[test]
fn drift_reports_each_kind_of_change_and_ignores_the_slot_record() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let (repo, snapshot) = sample_repo(kind);
        let (_dir, store) = store_with(&repo, &snapshot);
        let tree = store.commit_tree(&oid(&snapshot)).expect("tree");
        let tree = validate_tree(&store, &tree, &GitLimits::default()).expect("valid");
        let out = tempfile::tempdir().expect("tempdir");
        let slot = out.path();
        checkout(&store, &tree, slot).expect("checkout");
        std::fs::write(slot.join(".ferry-slot"), b"record").expect("record");
        assert_eq!(diff_dir_against_tree(&store, &tree, slot).expect("diff"), vec![]);

        std::fs::write(slot.join("README.md"), b"# Ferry sampLe\n").expect("same size, new bytes");
        std::fs::set_permissions(slot.join("config/app.toml"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::remove_file(slot.join("link-to-readme")).expect("rm link");
        std::os::unix::fs::symlink("config", slot.join("link-to-readme")).expect("relink");
        std::fs::remove_dir_all(slot.join("deep")).expect("rm dir");
        std::fs::write(slot.join("config/extra"), b"new").expect("add");
        std::fs::remove_file(slot.join("dangling")).expect("rm");
        std::fs::create_dir(slot.join("dangling")).expect("dir where a link was");

        let entry = |p: &str, kind| DriftEntry { path: PathBuf::from(p), kind };
        let diff = diff_dir_against_tree(&store, &tree, slot).expect("diff");
        assert_eq!(
            diff,
            vec![
                entry("README.md", DriftKind::Modified { content: true, mode: false }),
                entry("config/app.toml", DriftKind::Modified { content: false, mode: true }),
                entry("config/extra", DriftKind::Added),
                entry("dangling", DriftKind::TypeChanged),
                entry("deep", DriftKind::Removed),
                entry("link-to-readme", DriftKind::SymlinkTarget),
            ],
            "{kind:?}"
        );
    }
}

#[test]
fn prune_keeps_what_kept_releases_need_and_drops_the_rest() {
    let (repo, first) = sample_repo(Kind::Sha1);
    repo.write("README.md", b"# Ferry sample, release 2\n");
    let c2 = repo.commit_all("two");
    let second = repo.snapshot(&repo.tree_of(&c2), "snapshot 2");
    repo.write("config/app.toml", b"port = 1\n");
    let c3 = repo.commit_all("three");
    let third = repo.snapshot(&repo.tree_of(&c3), "snapshot 3");

    let (_dir, store) = empty_store(&repo);
    let limits = GitLimits::default();
    store.import_pack(&mut &repo.pack_full(&first)[..], &[], &limits).expect("full 1");
    let thin = repo.pack_thin(&second, &first);
    store.import_pack(&mut &thin[..], &[oid(&first)], &limits).expect("thin 2");
    let count_packs = || {
        std::fs::read_dir(store.objects_dir().join("pack"))
            .expect("pack dir")
            .filter(|e| e.as_ref().expect("dirent").path().extension() == Some("pack".as_ref()))
            .count()
    };
    assert_eq!(count_packs(), 2);

    // Release 2 shares unchanged files with release 1's pack: both stay.
    let outcome = store.prune(&[oid(&second)]).expect("prune");
    assert_eq!((outcome.packs_kept, outcome.packs_removed), (2, 0));

    // A full payload of release 3 makes both older packs unnecessary.
    store.import_pack(&mut &repo.pack_full(&third)[..], &[], &limits).expect("full 3");
    let outcome = store.prune(&[oid(&third)]).expect("prune");
    assert_eq!((outcome.packs_kept, outcome.packs_removed), (1, 2));
    assert!(outcome.bytes_removed > 0);
    assert_eq!(count_packs(), 1);

    // What is left still checks out, through a fresh handle as well.
    let store = crate::git::ObjectStore::open(store.objects_dir(), Kind::Sha1).expect("reopen");
    let tree = store.commit_tree(&oid(&third)).expect("tree");
    let tree = validate_tree(&store, &tree, &limits).expect("valid");
    let out = tempfile::tempdir().expect("tempdir");
    checkout(&store, &tree, out.path()).expect("checkout");

    // Asking to keep a commit the store lacks deletes nothing.
    let err = store.prune(&[oid(&first)]).expect_err("gone");
    assert_eq!(err.reason(), Reason::MissingObject);
    assert_eq!(count_packs(), 1);
}

#[test]
fn large_files_stream_from_the_pack_and_deltas_of_them_are_read_whole() {
    // Two 5 MiB files alike, so that git stores one of them as a delta of the other, and one
    // unlike anything. SplitMix64 bytes, which zlib cannot shrink.
    let mut state = 7u64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len / 8)
            .flat_map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)).to_le_bytes()
            })
            .collect()
    };
    let alike = random(5 << 20);
    let mut edited = alike.clone();
    edited[1 << 20..(1 << 20) + 5].copy_from_slice(b"fresh");
    let unlike = random(6 << 20);
    let repo = Repo::new(Kind::Sha1);
    repo.write("img/a.bin", &alike);
    repo.write("img/b.bin", &edited);
    repo.write("img/c.bin", &unlike);
    let commit = repo.commit_all("large files");
    let out = tempfile::tempdir().expect("tempdir");
    let (_dir, store) = store_with(&repo, &commit);
    let tree = store.commit_tree(&oid(&commit)).expect("tree");
    let tree = validate_tree(&store, &tree, &GitLimits::default()).expect("valid");
    let mut reader = crate::git::pack_reader::PackReader::new(&store);
    let streamed = tree
        .entries()
        .iter()
        .filter(|e| e.path.starts_with(b"img/"))
        .filter(|e| {
            let size = std::fs::metadata(repo.work.join(e.path.to_string())).expect("stat").len();
            let mut sink = tempfile::tempfile().expect("temp file");
            reader.copy_blob(&e.id, size, &mut sink, Path::new("sink")).expect("copy")
        })
        .count();
    assert_eq!(streamed, 2, "the unlike file and the delta's base stream; the delta does not");
    checkout(&store, &tree, out.path()).expect("checkout");
    for (file, content) in [("img/a.bin", &alike), ("img/b.bin", &edited), ("img/c.bin", &unlike)] {
        assert!(std::fs::read(out.path().join(file)).expect("read") == *content, "{file}");
    }
}

#[test]
fn a_damaged_pack_fails_the_checkout_in_one_line() {
    let repo = Repo::new(Kind::Sha1);
    let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    repo.write("big.bin", &content);
    let commit = repo.commit_all("one file");
    let (_dir, store) = store_with(&repo, &commit);
    let tree = store.commit_tree(&oid(&commit)).expect("tree");
    let tree = validate_tree(&store, &tree, &GitLimits::default()).expect("valid");
    // Bit rot inside the blob's stream after it was imported and checked.
    let pack = std::fs::read_dir(store.objects_dir().join("pack"))
        .expect("pack dir")
        .map(|e| e.expect("dirent").path())
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .expect("a pack");
    let mut bytes = std::fs::read(&pack).expect("read pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    bytes[middle + 1] ^= 0xff;
    std::fs::write(&pack, &bytes).expect("write pack");
    let out = tempfile::tempdir().expect("tempdir");
    let err = checkout(&store, &tree, out.path()).expect_err("damaged");
    let text = err.to_string();
    let blob = tree.entries()[0].id.to_string();
    assert!(!text.contains('\n') && text.contains(&format!("blob {blob}: corrupt zlib stream")), "{text}");
}
