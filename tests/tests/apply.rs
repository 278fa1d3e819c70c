//! Full and delta apply through the real binaries: the slot equals `git archive` of the
//! source tree, `current` switches, history and status agree.

use std::os::unix::fs::PermissionsExt;

use ferry_tests::fixture::{Device, Operator};
use ferry_tests::trees;

fn fleet(op: &Operator) {
    op.write(&[
        ("site/app.conf", Some("port = 8080\n")),
        ("site/bin/start.sh", Some("#!/bin/sh\necho start\n")),
        ("site/data/readme.txt", Some("hello\n")),
        ("other/ignored.txt", Some("not released\n")),
    ]);
    op.make_executable("site/bin/start.sh");
    std::os::unix::fs::symlink("app.conf", op.repo.join("site/current.conf")).expect("symlink");
}

#[test]
fn full_then_delta_apply_matches_git_archive() {
    for format in ["sha1", "sha256"] {
        let op = Operator::with_format(format);
        fleet(&op);
        op.commit("one");
        op.release("stable", Some("site"), &[]).ok();
        let dev = Device::new("stable", &op.root1(), "");

        let r = dev.import(&op.mirror).ok();
        assert!(r.stdout.contains("release 1 (full"), "{}", r.stdout);
        assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
        let expected = op.dir.path().join("expected1");
        trees::git_archive(&op.repo, "HEAD", Some("site"), &expected);
        trees::assert_same(&expected, &dev.current());

        op.write(&[
            ("site/app.conf", Some("port = 9090\n")),
            ("site/data/readme.txt", None),
            ("site/new.txt", Some("n\n")),
        ]);
        op.commit("two");
        op.release("stable", Some("site"), &[]).ok();
        let r = dev.import(&op.mirror).ok();
        assert!(r.stdout.contains("release 2 (delta from release 1"), "{format}: {}", r.stdout);
        assert_eq!(dev.current_target().as_deref(), Some("slots/b"));
        let expected = op.dir.path().join("expected2");
        trees::git_archive(&op.repo, "HEAD", Some("site"), &expected);
        trees::assert_same(&expected, &dev.current());

        let status = dev.status();
        assert_eq!(status["applied"]["release"], 2);
        assert_eq!(status["slot"], "b");
        assert_eq!(status["previous"]["release"], 1);
        assert_eq!(status["trial"], "none");
        let history = dev.agent(&["history", "--json"]).output().expect("history");
        let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
        let states: Vec<(u64, String)> = history["applies"]
            .as_array()
            .expect("applies")
            .iter()
            .map(|a| (a["release"].as_u64().expect("n"), a["state"].as_str().expect("s").to_string()))
            .collect();
        assert_eq!(states, vec![(2, "committed".to_string()), (1, "committed".to_string())]);

        // Importing the same mirror again changes nothing.
        let r = dev.import(&op.mirror).ok();
        assert!(r.stdout.contains("up to date"), "{}", r.stdout);
        assert_eq!(dev.current_target().as_deref(), Some("slots/b"));
    }
}

#[test]
fn status_verify_lists_drifted_paths_and_exits_1() {
    let op = Operator::new();
    fleet(&op);
    op.commit("one");
    op.release("stable", Some("site"), &[]).ok();
    let dev = Device::new("stable", &op.root1(), "");
    dev.import(&op.mirror).ok();

    let clean = ferry_tests::run(&mut dev.agent(&["status", "--verify"])).ok();
    assert!(clean.stdout.contains("drift        none: the slot matches release 1"), "{}", clean.stdout);

    std::fs::write(dev.current().join("app.conf"), "port = 1\n").expect("tamper");
    std::fs::remove_file(dev.current().join("data/readme.txt")).expect("remove");
    std::fs::write(dev.current().join("intruder.sh"), "#!/bin/sh\n").expect("add");
    let drifted = ferry_tests::run(&mut dev.agent(&["status", "--verify"])).code(1);
    for line in ["app.conf (content changed)", "data/readme.txt (removed)", "intruder.sh (added)"] {
        assert!(drifted.stdout.contains(line), "missing {line:?}:\n{}", drifted.stdout);
    }
    let json = ferry_tests::run(&mut dev.agent(&["status", "--verify", "--json"])).code(1);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["drift"]["paths"].as_array().map(Vec::len), Some(3), "{v:#}");
    assert_eq!(v["drift"]["restored"], false);
}

/// `ferry-agent import` with the service's log level, which says how the slot was written.
fn import_logging_info(dev: &Device, mirror: &std::path::Path) -> ferry_tests::Run {
    ferry_tests::run(dev.agent(&["import"]).arg(mirror).env("FERRY_LOG", "info")).ok()
}

/// A delta updates the inactive slot in place when the slot still holds its release exactly
/// as written (docs/decisions.md, "In-place slot updates"); anything changed in the slot
/// after its record, even a `chmod` to the same mode, makes the apply write it whole, and
/// what was added there is gone. The result equals `git archive` either way.
#[test]
fn delta_updates_the_older_slot_in_place_unless_it_changed_since() {
    let op = Operator::new();
    fleet(&op);
    let dev = Device::new("stable", &op.root1(), "");
    let release = |n: u64, files: &[(&str, Option<&str>)]| {
        op.write(files);
        op.commit(&format!("release {n}"));
        op.release("stable", Some("site"), &[]).ok();
        let r = import_logging_info(&dev, &op.mirror);
        let expected = op.dir.path().join(format!("expected{n}"));
        trees::git_archive(&op.repo, "HEAD", Some("site"), &expected);
        trees::assert_same(&expected, &dev.current());
        r
    };
    let r = release(1, &[]);
    assert!(r.stderr.contains("slot written whole"), "{}", r.stderr);
    // Slot B was never written: the first delta writes it whole.
    let r = release(2, &[("site/app.conf", Some("port = 9090\n"))]);
    assert!(r.stderr.contains("slot written whole"), "{}", r.stderr);
    assert_eq!(dev.current_target().as_deref(), Some("slots/b"));

    // Slot A holds release 1, untouched: release 3 updates it in place, writing the two
    // files that differ from release 1 (app.conf, new.txt) and removing three entries (the
    // old app.conf, data/readme.txt and the directory it leaves empty).
    let r = release(3, &[("site/new.txt", Some("n\n")), ("site/data/readme.txt", None)]);
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
    assert!(r.stderr.contains("slot updated in place"), "{}", r.stderr);
    assert!(r.stderr.contains("files=2") && r.stderr.contains("removed=3"), "{}", r.stderr);

    // Slot B (release 2) is touched: same mode again, and a file added.
    let slot_b = dev.state.join("slots/b");
    let start = slot_b.join("bin/start.sh");
    std::fs::set_permissions(&start, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(slot_b.join("bin/left-behind"), "x").expect("write");
    let r = release(4, &[("site/new.txt", Some("four\n"))]);
    assert_eq!(dev.current_target().as_deref(), Some("slots/b"));
    assert!(r.stderr.contains("slot cannot be updated in place") && r.stderr.contains("slots/b/bin"), "{}", r.stderr);
    assert!(r.stderr.contains("slot written whole"), "{}", r.stderr);
    assert!(!slot_b.join("bin/left-behind").exists());

    // Slot A (release 3): a file changed to same-size content, then the record written
    // again with the same bytes, so that it is newer than the change. The agent noted the
    // ctime of the record it wrote; this one is not it.
    let slot_a = dev.state.join("slots/a");
    std::fs::write(slot_a.join("bin/start.sh"), "#!/bin/sh\necho evil!\n").expect("tamper");
    let record = std::fs::read(slot_a.join(".ferry-slot")).expect("record");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(slot_a.join(".ferry-slot"), record).expect("rewrite the record");
    let r = release(5, &[("site/new.txt", Some("five\n"))]);
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
    assert!(r.stderr.contains("its record is not the one this agent wrote"), "{}", r.stderr);
    assert!(r.stderr.contains("slot written whole"), "{}", r.stderr);
    let start = std::fs::read_to_string(slot_a.join("bin/start.sh")).expect("read");
    assert_eq!(start, "#!/bin/sh\necho start\n");
}

/// An in-place update that fails halfway (an injected I/O error after the old entries are
/// removed) leaves `current` on the running release, removes the half-updated slot and is
/// journaled `aborted`; importing again writes the slot whole.
#[test]
fn an_in_place_update_that_fails_halfway_is_removed_and_retried_whole() {
    let op = Operator::new();
    fleet(&op);
    let dev = Device::new("stable", &op.root1(), "");
    for (n, conf) in [(1, "port = 1\n"), (2, "port = 2\n"), (3, "port = 3\n")] {
        op.write(&[("site/app.conf", Some(conf))]);
        op.commit(&format!("release {n}"));
        op.release("stable", Some("site"), &[]).ok();
        if n < 3 {
            dev.import(&op.mirror).ok();
        }
    }
    let failed =
        ferry_tests::run(dev.agent(&["import"]).arg(&op.mirror).env("FAILPOINTS", "update::after-removals=return"));
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(failed.stderr.contains("update::after-removals"), "{}", failed.all());
    assert_eq!(dev.current_target().as_deref(), Some("slots/b"));
    assert_eq!(dev.applied_release(), Some(2));
    assert!(!dev.state.join("slots/a").exists(), "the half-updated slot is removed");

    let r = import_logging_info(&dev, &op.mirror);
    assert!(r.stderr.contains("slot written whole"), "{}", r.stderr);
    assert_eq!(dev.applied_release(), Some(3));
    let expected = op.dir.path().join("expected3");
    trees::git_archive(&op.repo, "HEAD", Some("site"), &expected);
    trees::assert_same(&expected, &dev.current());
}

/// A large binary changed between releases leaves the delta's pack and travels as a bsdiff
/// patch after it (docs/formats.md, "Patch section"); the device rebuilds it from the blob
/// of its running release, and the slot still equals `git archive`.
#[test]
fn a_changed_binary_travels_as_a_patch_and_applies() {
    for format in ["sha1", "sha256"] {
        let op = Operator::with_format(format);
        fleet(&op);
        // A real program's bytes: the first 512 KiB of the agent binary under test; the next
        // release inserts 100 bytes in the middle and bumps every 64th byte (addresses moved).
        let agent = std::fs::read(&ferry_tests::binaries().agent).expect("agent binary");
        let v1 = agent[..512 << 10].to_vec();
        let mut v2 = v1.clone();
        v2.splice(200_000..200_000, [0x5a; 100]);
        for byte in v2.iter_mut().step_by(64) {
            *byte = byte.wrapping_add(1);
        }
        let tool = op.repo.join("site/bin/tool");
        std::fs::write(&tool, &v1).expect("write");
        op.commit("one");
        op.release("stable", Some("site"), &[]).ok();
        let dev = Device::new("stable", &op.root1(), "");
        import_logging_info(&dev, &op.mirror);

        std::fs::write(&tool, &v2).expect("write");
        op.write(&[("site/app.conf", Some("port = 9090\n"))]);
        op.commit("two");
        let published = op.release("stable", Some("site"), &[]).ok();
        assert!(published.stdout.contains("1 large file(s) sent as binary patches"), "{}", published.stdout);
        let r = import_logging_info(&dev, &op.mirror);
        assert!(r.stdout.contains("release 2 (delta from release 1"), "{format}: {}", r.stdout);
        assert!(r.stderr.contains("patched=1"), "{format}: {}", r.stderr);
        let expected = op.dir.path().join("expected2");
        trees::git_archive(&op.repo, "HEAD", Some("site"), &expected);
        trees::assert_same(&expected, &dev.current());
        assert_eq!(std::fs::read(dev.current().join("bin/tool")).expect("read"), v2);
    }
}
