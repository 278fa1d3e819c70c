//! In-place slot updates: the result equals a fresh checkout, only changes are written, and
//! a slot changed in any way after its record is never reused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use gix_hash::Kind;

use super::{empty_store, oid, sample_repo, snapshot_dir, Repo};
use crate::git::{check_intact, checkout, ctime, update, validate_tree, GitLimits, ObjectStore, ValidatedTree};

/// Both releases of `repo` in one store.
fn store_with_both(repo: &Repo, first: &str, second: &str) -> (tempfile::TempDir, ObjectStore) {
    let (dir, store) = empty_store(repo);
    for commit in [first, second] {
        store.import_pack(&mut &repo.pack_full(commit)[..], &[], &GitLimits::default()).expect("import");
    }
    (dir, store)
}

fn validated(store: &ObjectStore, commit: &str) -> ValidatedTree {
    let tree = store.commit_tree(&oid(commit)).expect("tree");
    validate_tree(store, &tree, &GitLimits::default()).expect("valid")
}

/// Checks `tree` out into `slot` and writes a record after it, as the agent does; returns
/// the record's ctime.
fn checkout_with_record(store: &ObjectStore, tree: &ValidatedTree, slot: &Path) -> crate::git::Ctime {
    checkout(store, tree, slot).expect("checkout");
    let record = slot.join(".ferry-slot");
    std::fs::write(&record, b"record").expect("record");
    ctime(&std::fs::symlink_metadata(&record).expect("stat record"))
}

/// Release 2 of the sample: every kind of change an entry can go through.
fn second_release(repo: &Repo) -> String {
    let work = |p: &str| repo.work.join(p);
    repo.write("README.md", b"# Ferry sample, release 2\n"); // edited
    std::fs::remove_file(work("config/empty")).expect("rm"); // removed
    repo.write("new/dir/added.txt", b"added\n"); // added, in a new directory
    std::fs::remove_dir_all(work("deep/a/b")).expect("rm dir"); // directory ...
    repo.write("deep/a/b", b"now a file\n"); // ... becomes a file
    std::fs::remove_file(work("bin/start.sh")).expect("rm"); // file ...
    repo.write("bin/start.sh/inner", b"now a directory\n"); // ... becomes a directory
    std::fs::remove_file(work("link-to-readme")).expect("rm link");
    repo.symlink("link-to-readme", "config/app.toml"); // link retargeted
    std::fs::remove_file(work("dangling")).expect("rm link");
    repo.write("dangling", b"was a link\n"); // link becomes a file
    std::fs::set_permissions(work("config/app.toml"), std::fs::Permissions::from_mode(0o755)).expect("chmod"); // mode only
    std::fs::remove_file(work("data/blob.bin")).expect("rm");
    repo.symlink("data/blob.bin", "../README.md"); // file becomes a link
    let commit = repo.commit_all("two");
    repo.snapshot(&repo.tree_of(&commit), "snapshot 2")
}

#[test]
fn update_in_place_equals_a_fresh_checkout_and_writes_only_what_changed() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let (repo, first) = sample_repo(kind);
        let second = second_release(&repo);
        let (_dir, store) = store_with_both(&repo, &first, &second);
        let (old, new) = (validated(&store, &first), validated(&store, &second));

        let out = tempfile::tempdir().expect("tempdir");
        let (slot, fresh) = (out.path().join("slot"), out.path().join("fresh"));
        std::fs::create_dir_all(&slot).expect("mkdir");
        std::fs::create_dir_all(&fresh).expect("mkdir");
        let since = checkout_with_record(&store, &old, &slot);
        let link_inode = |slot: &Path| std::fs::symlink_metadata(slot.join("config/current")).expect("lstat").ino();
        let unchanged_link = link_inode(&slot);
        check_intact(&old, &slot, since).expect("a fresh checkout is intact");
        std::fs::remove_file(slot.join(".ferry-slot")).expect("discard record");

        let stats = update(&store, &old, &new, &slot).expect("update");
        checkout(&store, &new, &fresh).expect("fresh checkout");
        assert_eq!(snapshot_dir(&slot), snapshot_dir(&fresh), "{kind:?}");
        let theirs = out.path().join("theirs");
        repo.archive_into(&second, &theirs);
        assert_eq!(snapshot_dir(&slot), snapshot_dir(&theirs), "{kind:?}");
        let mode = |p: &str| std::fs::symlink_metadata(slot.join(p)).expect("stat").permissions().mode() & 0o7777;
        assert_eq!((mode("config/app.toml"), mode("bin/start.sh"), mode("new/dir")), (0o755, 0o755, 0o755));
        assert_eq!(mode("README.md"), 0o644);

        // Written: files README.md, bin/start.sh/inner, config/app.toml, dangling, deep/a/b,
        // new/dir/added.txt; directories bin/start.sh, new, new/dir; links data/blob.bin,
        // link-to-readme. Removed: README.md, bin/start.sh, config/app.toml, config/empty,
        // dangling, data/blob.bin, deep/a/b with c, d and leaf.txt, link-to-readme.
        assert_eq!((stats.files, stats.dirs, stats.symlinks), (6, 3, 2), "{kind:?} {stats:?}");
        assert_eq!(stats.removed, 11, "{kind:?} {stats:?}");
        // An unchanged entry is the same inode, not a copy.
        assert_eq!(link_inode(&slot), unchanged_link, "{kind:?}");
    }
}

/// The sample's two releases in one store, and a slot holding release 1 whose record the
/// apply has just removed: what [`update`] starts from. The first directory holds the store.
fn slot_ready_for_update() -> (tempfile::TempDir, ObjectStore, ValidatedTree, ValidatedTree, tempfile::TempDir) {
    let (repo, first) = sample_repo(Kind::Sha1);
    let second = second_release(&repo);
    let (dir, store) = store_with_both(&repo, &first, &second);
    let (old, new) = (validated(&store, &first), validated(&store, &second));
    let out = tempfile::tempdir().expect("tempdir");
    checkout_with_record(&store, &old, out.path());
    std::fs::remove_file(out.path().join(".ferry-slot")).expect("discard record");
    (dir, store, old, new, out)
}

#[test]
fn an_updated_slot_is_intact_for_the_next_update() {
    let (_dir, store, old, new, out) = slot_ready_for_update();
    update(&store, &old, &new, out.path()).expect("update");
    let record = out.path().join(".ferry-slot");
    std::fs::write(&record, b"record").expect("record");
    let since = ctime(&std::fs::symlink_metadata(&record).expect("stat"));
    check_intact(&new, out.path(), since).expect("intact after an update");
    // And back again.
    std::fs::remove_file(&record).expect("discard record");
    update(&store, &new, &old, out.path()).expect("update back");
    let fresh = tempfile::tempdir().expect("tempdir");
    checkout(&store, &old, fresh.path()).expect("checkout");
    assert_eq!(snapshot_dir(out.path()), snapshot_dir(fresh.path()));
}

#[test]
fn check_intact_refuses_a_slot_changed_in_any_way_after_its_record() {
    let (repo, first) = sample_repo(Kind::Sha1);
    let (_dir, store) = empty_store(&repo);
    store.import_pack(&mut &repo.pack_full(&first)[..], &[], &GitLimits::default()).expect("import");
    let tree = validated(&store, &first);
    type Change = fn(&Path);
    let changes: &[(&str, Change)] = &[
        ("same size, new bytes", |s| std::fs::write(s.join("README.md"), b"# Ferry sampLe\n").expect("write")),
        ("mode", |s| {
            std::fs::set_permissions(s.join("README.md"), std::fs::Permissions::from_mode(0o600)).expect("chmod")
        }),
        ("extra file", |s| std::fs::write(s.join("config/extra"), b"x").expect("write")),
        ("extra file, removed again", |s| {
            std::fs::write(s.join("config/extra"), b"x").expect("write");
            std::fs::remove_file(s.join("config/extra")).expect("rm");
        }),
        ("removed file", |s| std::fs::remove_file(s.join("config/empty")).expect("rm")),
        ("removed directory", |s| std::fs::remove_dir_all(s.join("deep/a/b")).expect("rm")),
        ("relinked", |s| {
            std::fs::remove_file(s.join("dangling")).expect("rm");
            std::os::unix::fs::symlink("not-there/yet", s.join("dangling")).expect("same target again");
        }),
        ("touched back in time", |s| {
            let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
            std::fs::File::options()
                .write(true)
                .open(s.join("bin/start.sh"))
                .expect("open")
                .set_modified(old)
                .expect("utimes");
        }),
        ("hard-linked elsewhere", |s| {
            std::fs::hard_link(s.join("data/blob.bin"), s.join("../elsewhere")).expect("link")
        }),
    ];
    for (what, change) in changes {
        let out = tempfile::tempdir().expect("tempdir");
        let slot = out.path().join("slot");
        std::fs::create_dir(&slot).expect("mkdir");
        let since = checkout_with_record(&store, &tree, &slot);
        check_intact(&tree, &slot, since).expect("intact before the change");
        change(&slot);
        let err = check_intact(&tree, &slot, since).expect_err(what);
        assert!(!err.to_string().is_empty(), "{what}");
    }
    // The record itself is not part of the tree; a stray record temporary is.
    let out = tempfile::tempdir().expect("tempdir");
    let since = checkout_with_record(&store, &tree, out.path());
    std::fs::write(out.path().join(".ferry-slot.tmp-1"), b"x").expect("write");
    let err = check_intact(&tree, out.path(), since).expect_err("stray temporary");
    assert!(err.to_string().contains(".ferry-slot.tmp-1"), "{err}");
}

#[test]
fn a_failed_update_leaves_no_record_and_the_next_checkout_starts_over() {
    let (_dir, store, old, new, out) = slot_ready_for_update();
    // Something appears where the new tree wants a directory: the update stops there.
    std::fs::write(out.path().join("new"), b"in the way").expect("write");
    let err = update(&store, &old, &new, out.path()).expect_err("blocked");
    assert_eq!(err.reason(), ferry_proto::Reason::Io, "{err}");
    assert!(!out.path().join(".ferry-slot").exists());
}

/// Enough files that [`checkout`] and [`update`] write them on several threads.
#[test]
fn many_files_are_written_in_parallel_and_the_first_failure_stops_the_write() {
    let repo = Repo::new(Kind::Sha1);
    for i in 0..300 {
        let body: Vec<u8> = (0..(i * 397) % 70_000).map(|b| (b * 7 + i) as u8).collect();
        if i % 7 == 0 {
            repo.write_exec(&format!("d{}/file-{i}", i % 10), &body);
        } else {
            repo.write(&format!("d{}/file-{i}", i % 10), &body);
        }
    }
    // Larger than what is written in parallel: written on its own afterwards.
    repo.write("big/firmware.bin", &(0..5u32 << 20).map(|b| (b % 251) as u8).collect::<Vec<_>>());
    let c1 = repo.commit_all("one");
    let first = repo.snapshot(&repo.tree_of(&c1), "snapshot 1");
    for i in 0..300 {
        repo.write(&format!("d{}/added-{i}", i % 10), format!("added {i}\n").as_bytes());
    }
    let c2 = repo.commit_all("two");
    let second = repo.snapshot(&repo.tree_of(&c2), "snapshot 2");
    let (_dir, store) = store_with_both(&repo, &first, &second);
    let (old, new) = (validated(&store, &first), validated(&store, &second));

    let out = tempfile::tempdir().expect("tempdir");
    let slot = out.path().join("slot");
    std::fs::create_dir(&slot).expect("mkdir");
    let stats = checkout(&store, &old, &slot).expect("checkout");
    assert_eq!((stats.files, stats.bytes > 5 << 20), (301, true));
    let theirs = out.path().join("theirs");
    repo.archive_into(&first, &theirs);
    assert_eq!(snapshot_dir(&slot), snapshot_dir(&theirs));

    // One of the 300 new files is already there: the update fails on it, naming it.
    std::fs::write(slot.join("d3/added-153"), b"in the way").expect("plant");
    let err = update(&store, &old, &new, &slot).expect_err("blocked");
    assert_eq!(err.reason(), ferry_proto::Reason::Io, "{err}");
    assert!(err.to_string().contains("d3/added-153"), "{err}");
}
