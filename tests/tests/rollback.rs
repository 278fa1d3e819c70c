//! Trials that fail: a failing health check, a hook timeout and a failing activate hook
//! each switch back to the previous slot and refuse the release from then on; the first
//! release failing leaves the device with none; an operator rollback goes through the same
//! protocol. Also: config errors name the key, and cached payloads are pruned.

use std::fs;

use ferry_tests::fixture::{Device, Operator};
use ferry_tests::run;

const GOOD: &str =
    "[hooks]\nactivate = \"echo activated $FERRY_RELEASE >> $FERRY_SLOT_PATH/../../hook.log\"\nhealth = \"true\"\n";

fn release_with_hooks(op: &Operator, n: &str, ferry_toml: &str) {
    op.write(&[("app/version.txt", Some(n)), ("app/ferry.toml", Some(ferry_toml))]);
    op.commit(n);
    op.release("stable", Some("app"), &[]).ok();
}

/// A device on release 1 (healthy) with release 2 published with `hooks`.
fn device_facing(hooks: &str) -> (Operator, Device) {
    let op = Operator::new();
    release_with_hooks(&op, "1", GOOD);
    let dev = Device::new("stable", &op.root1(), "[hooks]\nmax_timeout = \"30s\"\n");
    dev.import(&op.mirror).ok();
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
    release_with_hooks(&op, "2", hooks);
    (op, dev)
}

fn assert_rolled_back(op: &Operator, dev: &Device, reason: &str) {
    let r = dev.import(&op.mirror).code(1);
    assert!(r.stdout.contains(&format!("release 2 rolled back: {reason}:")), "{}", r.stdout);
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"), "current did not switch back");
    assert_eq!(fs::read_to_string(dev.current().join("version.txt")).expect("version"), "1");
    let s = dev.status();
    assert_eq!(s["applied"]["release"], 1);
    assert_eq!(s["last_apply"]["state"], "rolled-back");
    assert_eq!(s["last_error"]["reason"], reason);
    assert!(s["previous"].is_null(), "the failed slot must not be a rollback target: {s}");
    // Not retried: the next import refuses it without switching.
    let again = dev.import(&op.mirror).code(1);
    assert!(again.stdout.contains("rejected: refused:"), "{}", again.stdout);
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
    // The restored release was activated again.
    let log = fs::read_to_string(dev.state.join("hook.log")).expect("hook log");
    assert!(log.ends_with("activated 1\n"), "{log}");
}

#[test]
fn failing_health_check_rolls_back_and_is_not_retried() {
    let (op, dev) =
        device_facing("[hooks]\nhealth = \"echo sick; exit 3\"\nhealth_retries = 1\nhealth_interval = \"10ms\"\n");
    assert_rolled_back(&op, &dev, "health-failed");
    let s = dev.status();
    assert!(s["last_error"]["message"].as_str().expect("msg").contains("sick"), "{s}");
}

#[test]
fn hook_timeout_rolls_back() {
    let (op, dev) = device_facing("[hooks]\nhealth = \"sleep 30\"\nhealth_timeout = \"1s\"\nhealth_retries = 0\n");
    let started = std::time::Instant::now();
    assert_rolled_back(&op, &dev, "health-failed");
    assert!(started.elapsed().as_secs() < 20, "the timeout did not cut the hook");
}

#[test]
fn failing_activate_rolls_back() {
    let (op, dev) = device_facing("[hooks]\nactivate = \"exit 7\"\nhealth = \"true\"\n");
    assert_rolled_back(&op, &dev, "activate-failed");
}

#[test]
fn first_release_failing_leaves_no_current() {
    let op = Operator::new();
    release_with_hooks(&op, "1", "[hooks]\nhealth = \"false\"\nhealth_retries = 0\n");
    let dev = Device::new("stable", &op.root1(), "");
    let r = dev.import(&op.mirror).code(1);
    assert!(r.stdout.contains("rolled back: health-failed"), "{}", r.stdout);
    assert_eq!(dev.current_target(), None);
    assert!(dev.status()["applied"].is_null());
}

#[test]
fn operator_rollback_switches_back_and_refuses_the_newer_release() {
    let (op, dev) = device_facing(GOOD);
    dev.import(&op.mirror).ok();
    assert_eq!(dev.current_target().as_deref(), Some("slots/b"));
    let r = run(&mut dev.agent(&["rollback"])).ok();
    assert!(r.stdout.contains("applied release 1 in slot a"), "{}", r.stdout);
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
    let again = dev.import(&op.mirror).code(1);
    assert!(again.stdout.contains("rejected: refused:"), "{}", again.stdout);
    // A newer release is taken again.
    release_with_hooks(&op, "3", GOOD);
    dev.import(&op.mirror).ok();
    assert_eq!(dev.applied_release(), Some(3));
}

#[test]
fn bad_ferry_toml_is_a_typed_failure_and_rolls_back() {
    let (op, dev) = device_facing("[hooks]\nhelth = \"true\"\n");
    let r = dev.import(&op.mirror).code(1);
    assert!(r.stdout.contains("rolled back: malformed:") && r.stdout.contains("helth"), "{}", r.stdout);
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
}

#[test]
fn config_errors_name_the_key_and_exit_64() {
    let op = Operator::new();
    let dev = Device::new("stable", &op.root1(), "chanel = \"typo\"\n");
    let r = run(&mut dev.agent(&["status"])).code(64);
    assert!(r.stderr.contains("chanel"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    run(&mut dev.agent(&["no-such-command"])).code(64);
}

#[test]
fn cached_payloads_are_pruned_after_commit() {
    let (op, dev) = device_facing(GOOD);
    dev.import(&op.mirror).ok();
    let db = rusqlite::Connection::open(dev.state.join("ferry.db")).expect("db");
    let rows: i64 = db.query_row("SELECT COUNT(*) FROM payloads", [], |r| r.get(0)).expect("count");
    assert_eq!(rows, 0, "payloads of applied releases are kept");
    let files = fs::read_dir(dev.state.join("payloads")).expect("payload files").count();
    assert_eq!(files, 0, "payload files of applied releases are kept");
    let packs = fs::read_dir(dev.state.join("objects/pack")).expect("packs").count();
    assert!(packs <= 4, "{packs} pack files after two releases");
}
