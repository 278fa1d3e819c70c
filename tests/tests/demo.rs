//! The README's first command: `bundler demo` runs Ferry end to end (release 1 full,
//! release 2 as a delta, release 3 rolled back) and leaves the device on release 2.

use std::process::Command;

use ferry_tests::{binaries, run};

#[test]
fn the_demo_applies_a_full_release_a_delta_and_rolls_back_a_broken_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("ferry-demo");
    let mut cmd = Command::new(&binaries().bundler);
    cmd.arg("demo").arg("--dir").arg(&demo).arg("--agent").arg(&binaries().agent).env_remove("CARGO");
    let r = run(&mut cmd).ok();
    for expected in [
        "applied release 1 in slot a: healthy, committed",
        "verified release 2 (delta from release 1",
        "applied release 2 in slot b: healthy, committed",
        "release 3 rolled back: health-failed",
        "The device runs release 2 from slots/b",
    ] {
        assert!(r.stdout.contains(expected), "missing {expected:?} in:\n{}", r.stdout);
    }
    assert_eq!(
        std::fs::read_link(demo.join("device/state/current")).expect("current").display().to_string(),
        "slots/b"
    );

    // Running it again replaces the earlier demo; a directory that is not a demo is refused.
    run(&mut cmd).ok();
    let other = dir.path().join("not-a-demo");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("precious.txt"), "keep me").expect("write");
    let mut refuse = Command::new(&binaries().bundler);
    refuse.arg("demo").arg("--dir").arg(&other).arg("--agent").arg(&binaries().agent).env_remove("CARGO");
    let r = run(&mut refuse).code(1);
    assert!(r.stderr.contains("is not an earlier Ferry demo"), "{}", r.stderr);
    assert!(other.join("precious.txt").exists());
}
