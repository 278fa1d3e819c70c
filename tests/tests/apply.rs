//! Full and delta apply through the real binaries: the slot equals `git archive` of the
//! source tree, `current` switches, history and status agree.

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
