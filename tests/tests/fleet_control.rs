//! Fleet control through the real binaries, all enforced on the device from signed data:
//! label targeting, staged rollouts (widening keeps the first devices, a halt stops uptake,
//! the failure-ratio guard on widening), maintenance windows, and pause/resume. Devices
//! take releases both from a USB-style directory (`import`) and through the service loop
//! (`run --once` against a mirror directory).

use std::path::Path;
use std::process::Command;

use ferry_proto::{rollout, ChannelName};
use ferry_tests::fixture::{Device, Operator};
use ferry_tests::{run, Run};

fn stable() -> ChannelName {
    "stable".parse().expect("channel")
}

/// A device id whose rollout bucket for `release` of `stable` falls in `range`.
fn id_in(release: u64, range: std::ops::Range<u64>, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| range.contains(&rollout::bucket(id, &stable(), release)))
        .expect("some id falls in any range")
}

/// Commits `app/version.txt = version` and releases `app/` with `extra` options.
fn publish(op: &Operator, version: &str, extra: &[&str]) -> Run {
    op.write(&[("app/version.txt", Some(version))]);
    op.commit(version);
    op.release("stable", Some("app"), extra).ok()
}

/// A device that polls the operator's mirror directory.
fn polling_device(op: &Operator, id: &str, extra: &str) -> Device {
    Device::with_id(id, "stable", &op.root1(), &format!("mirrors = [\"{}\"]\n{extra}", op.mirror.display()))
}

fn run_once(dev: &Device) -> Run {
    run(&mut dev.agent(&["run", "--once"]))
}

fn rollout(op: &Operator, args: &[&str]) -> Run {
    let mut c = op.bundler(&["rollout", "--mirror"]);
    c.arg(&op.mirror).args(["--channel", "stable", "--index-key"]).arg(op.key("index")).args(args);
    run(&mut c)
}

fn index_doc(op: &Operator) -> serde_json::Value {
    op.inspect(&op.mirror.join("channels/stable/index"))["document"].clone()
}

fn event_kinds(dev: &Device) -> Vec<String> {
    let r = run(&mut dev.agent(&["history", "--json", "-n", "200"])).ok();
    let h: serde_json::Value = serde_json::from_str(&r.stdout).expect("history json");
    h["events"].as_array().expect("events").iter().map(|e| e["kind"].as_str().unwrap_or("").to_string()).collect()
}

fn waiting(dev: &Device) -> String {
    dev.status()["waiting"].as_str().unwrap_or("").to_string()
}

/// Device reports taken home on a "stick" into a fleet database.
fn reports_home(devices: &[&Device], db: &Path) {
    let stick = tempfile::tempdir().expect("stick");
    for dev in devices {
        run(dev.agent(&["export-reports"]).arg(stick.path())).ok();
    }
    let mut c = Command::new(&ferry_tests::binaries().bundler);
    c.args(["reports", "import"]).arg(stick.path()).arg("--db").arg(db).arg("--enroll-on-first-use");
    run(&mut c).ok();
}

fn fleet_json(op: &Operator, db: &Path) -> serde_json::Value {
    let r = run(op.bundler(&["fleet", "--json", "--db"]).arg(db).arg("--mirror").arg(&op.mirror)).ok();
    serde_json::from_str(&r.stdout).expect("fleet json")
}

#[test]
fn a_release_for_other_labels_is_skipped_and_reported_not_refused() {
    let op = Operator::new();
    publish(&op, "1", &[]);
    let dev = polling_device(&op, "pump-1", "labels = { site = \"plant8\" }");
    run_once(&dev).ok();
    assert_eq!(dev.applied_release(), Some(1), "release 1 has no label requirement");
    publish(&op, "2", &["--require-label", "site=plant7"]);
    let r = run_once(&dev).ok();
    assert!(r.all().contains("requires label site=plant7"), "{}", r.all());
    run_once(&dev).ok();
    assert_eq!(dev.applied_release(), Some(1));
    assert!(waiting(&dev).contains("plant7"), "{}", dev.status());
    let kinds = event_kinds(&dev);
    assert_eq!(kinds.iter().filter(|k| *k == "not-targeted").count(), 1, "reported once: {kinds:?}");
    assert!(!kinds.contains(&"rejected".to_string()), "not an attack: {kinds:?}");
    assert!(dev.status()["last_error"].is_null(), "{}", dev.status());

    // A matching device on the same mirror takes it.
    let plant7 = polling_device(&op, "pump-2", "labels = { site = \"plant7\" }");
    run_once(&plant7).ok();
    assert_eq!(plant7.applied_release(), Some(2));
}

#[test]
fn widening_a_rollout_keeps_the_first_devices_and_adds_others() {
    let op = Operator::new();
    publish(&op, "1", &[]);
    let canary = polling_device(&op, &id_in(2, 0..1000, "canary"), "");
    let second = polling_device(&op, &id_in(2, 1000..5000, "second"), "");
    let last = Device::with_id(&id_in(2, 5000..10_000, "last"), "stable", &op.root1(), "");
    for dev in [&canary, &second] {
        run_once(dev).ok();
    }
    last.import(&op.mirror).ok();

    let r = publish(&op, "2", &["--rollout", "10"]);
    assert!(r.stdout.contains("rollout   10% of devices"), "{}", r.stdout);
    run_once(&canary).ok();
    run_once(&second).ok();
    let imported = last.import(&op.mirror).ok();
    assert_eq!(
        (canary.applied_release(), second.applied_release(), last.applied_release()),
        (Some(2), Some(1), Some(1))
    );
    assert!(waiting(&second).contains("rolled out to 10%"), "{}", second.status());
    assert!(imported.stdout.contains("staying on release 1") && imported.stdout.contains("10%"), "{}", imported.stdout);
    assert!(event_kinds(&second).contains(&"rollout-wait".to_string()));

    // Widening needs the fleet's word on failures: refused blind, and nothing re-signed.
    let before = index_doc(&op);
    let r = rollout(&op, &["--percent", "50"]).code(1);
    assert!(r.stderr.contains("--db FLEETDB"), "{}", r.stderr);
    assert_eq!(index_doc(&op), before, "a refused rollout leaves the index alone");

    // The canary reported a healthy release 2: widening to 50 % is allowed.
    let db = op.dir.path().join("fleet.db");
    reports_home(&[&canary, &second], &db);
    let r = rollout(&op, &["--percent", "50", "--db", db.to_str().expect("utf-8")]).ok();
    assert!(r.stdout.contains("10% -> 50%"), "{}", r.stdout);
    let after = index_doc(&op);
    assert_eq!(after["rollout_percent"], 50);
    assert_eq!(after["version"].as_u64(), before["version"].as_u64().map(|v| v + 1));
    assert_eq!(after["latest"], before["latest"], "no new release");

    run_once(&canary).ok();
    run_once(&second).ok();
    last.import(&op.mirror).ok();
    assert_eq!(
        (canary.applied_release(), second.applied_release(), last.applied_release()),
        (Some(2), Some(2), Some(1))
    );
    assert!(waiting(&second).is_empty(), "{}", second.status());

    rollout(&op, &["--percent", "100", "--force"]).ok();
    last.import(&op.mirror).ok();
    assert_eq!(last.applied_release(), Some(2));
}

#[test]
fn a_halted_rollout_is_not_taken_and_devices_on_it_stay() {
    let op = Operator::new();
    publish(&op, "1", &[]);
    let early = polling_device(&op, &id_in(2, 0..1000, "early"), "");
    let late = polling_device(&op, &id_in(2, 0..1000, "late"), "");
    run_once(&early).ok();
    run_once(&late).ok();
    publish(&op, "2", &["--rollout", "10"]);
    run_once(&early).ok();
    assert_eq!(early.applied_release(), Some(2));

    let r = rollout(&op, &["--halt"]).ok();
    assert!(r.stdout.contains("10% -> halted at 10%"), "{}", r.stdout);
    assert_eq!(index_doc(&op)["halted"], true);
    run_once(&late).ok();
    run_once(&early).ok();
    assert_eq!((early.applied_release(), late.applied_release()), (Some(2), Some(1)), "halted: no new uptake");
    assert!(waiting(&late).contains("halted"), "{}", late.status());

    // USB alike: the stick's index says halted.
    let usb = Device::with_id(&id_in(2, 0..1000, "usb"), "stable", &op.root1(), "");
    let r = usb.import(&op.mirror).ok();
    assert!(r.stdout.contains("the rollout of release 2 is halted"), "{}", r.stdout);
    assert_eq!(usb.applied_release(), Some(1), "release 2 is halted; release 1, also on the stick, is not");

    // Resuming is a widening like any other.
    rollout(&op, &["--percent", "10", "--force"]).ok();
    run_once(&late).ok();
    assert_eq!(late.applied_release(), Some(2));
}

#[test]
fn widening_past_the_failure_ratio_is_refused_unless_forced() {
    let op = Operator::new();
    publish(&op, "1", &[]);
    let canary = polling_device(&op, &id_in(2, 0..1000, "canary"), "");
    run_once(&canary).ok();
    op.write(&[("app/ferry.toml", Some("[hooks]\nhealth = \"echo sick; exit 3\"\nhealth_retries = 0\n"))]);
    publish(&op, "2", &["--rollout", "10"]);
    run_once(&canary).code(1);
    assert_eq!(canary.applied_release(), Some(1), "rolled back");

    let db = op.dir.path().join("fleet.db");
    reports_home(&[&canary], &db);
    let fleet = fleet_json(&op, &db);
    let r2 = fleet["releases"].as_array().expect("releases").iter().find(|r| r["release"] == 2).expect("release 2");
    assert_eq!(r2["rolled_back"], 1);
    assert_eq!(r2["rollout"], "10%");
    assert!(r2["advice"].as_str().is_some_and(|a| a.starts_with("halt: 1 of 1 rolled back")), "{r2}");
    let table = run(op.bundler(&["fleet", "--db"]).arg(&db).arg("--mirror").arg(&op.mirror)).ok();
    assert!(table.stdout.contains("halt: 1 of 1 rolled back (100%)"), "{}", table.stdout);

    let before = index_doc(&op);
    let r = rollout(&op, &["--percent", "50", "--db", db.to_str().expect("utf-8")]).code(1);
    assert!(r.stderr.contains("1 of 1 devices that tried it rolled back (100.0%)"), "{}", r.stderr);
    assert_eq!(index_doc(&op), before);
    // A looser limit or --force widens; narrowing and halting never need either.
    rollout(&op, &["--percent", "5"]).ok();
    let r = rollout(&op, &["--percent", "50", "--db", db.to_str().expect("utf-8"), "--force"]).ok();
    assert!(r.stderr.contains("widening anyway"), "{}", r.stderr);
    assert_eq!(index_doc(&op)["rollout_percent"], 50);

    // Bad input is refused with usage errors and changes nothing.
    let before = index_doc(&op);
    for bad in [
        &["--percent", "101"][..],
        &["--percent", "50", "--halt"],
        &[],
        &["--percent", "5", "--max-failure-ratio", "2"],
    ] {
        rollout(&op, bad).code(64);
    }
    assert_eq!(index_doc(&op), before);
}

/// Unix seconds of the next Saturday `hh:mm` UTC that is at least an hour away.
fn next_saturday(hh: u64, mm: u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let day = now / 86_400;
    // 1970-01-01 was a Thursday: Monday-first weekday = (day + 3) % 7; Saturday = 5.
    let to_saturday = (5 + 7 - (day + 3) % 7) % 7;
    let mut t = (day + to_saturday) * 86_400 + hh * 3600 + mm * 60;
    if t < now + 3600 {
        t += 7 * 86_400;
    }
    t
}

/// An agent command at a fake time, in UTC.
fn agent_at(dev: &Device, at: u64, args: &[&str]) -> Run {
    run(dev.agent(args).env("FERRY_FAKE_NOW", at.to_string()).env("TZ", "UTC0"))
}

#[test]
fn an_apply_waits_for_the_maintenance_window_then_happens() {
    let op = Operator::new();
    let window = "apply_window = [\"Sat 02:00-04:00\"]\n";
    let early = next_saturday(1, 0);
    let during = early + 90 * 60;
    // The index must outlive the fake clock's trip up to a week ahead.
    let long = ["--expires", "30d"];
    publish(&op, "1", &long);

    // Through the service loop: downloaded before the window, applied in it.
    let dev = polling_device(&op, "gw-1", window);
    let r = agent_at(&dev, early, &["run", "--once"]).ok();
    assert!(r.all().contains("outside the apply window (Sat 02:00-04:00)"), "{}", r.all());
    assert_eq!(dev.applied_release(), None);
    let kinds = event_kinds(&dev);
    assert!(kinds.contains(&"fetched".to_string()) && kinds.contains(&"held".to_string()), "{kinds:?}");
    assert!(waiting(&dev).contains("the next opens"), "{}", dev.status());
    agent_at(&dev, during, &["run", "--once"]).ok();
    assert_eq!(dev.applied_release(), Some(1));

    // From a stick: stored and verified, then applied by the service with no mirror in
    // reach once the window opens; `--now` overrides the window for someone on site.
    let usb = Device::with_id("gw-2", "stable", &op.root1(), window);
    let r = agent_at(&usb, early, &["import", op.mirror.to_str().expect("utf-8")]).ok();
    assert!(r.stdout.contains("release 1 is stored and verified; not applied yet"), "{}", r.stdout);
    agent_at(&usb, early, &["run", "--once"]).code(1);
    assert_eq!(usb.applied_release(), None, "still outside the window");
    agent_at(&usb, during, &["run", "--once"]).ok();
    assert_eq!(usb.applied_release(), Some(1), "the pending release is applied in the window");

    publish(&op, "2", &long);
    let r = agent_at(&usb, early, &["import", "--now", op.mirror.to_str().expect("utf-8")]).ok();
    assert!(r.stdout.contains("applied release 2"), "{}", r.stdout);

    // Local time: the same instant is inside the window three hours east of UTC.
    let east = polling_device(&op, "gw-3", window);
    let before_midnight_utc = during - 3 * 3600; // Sat 02:30 at UTC+3 is Fri 23:30 UTC
    run(east.agent(&["run", "--once"]).env("FERRY_FAKE_NOW", before_midnight_utc.to_string()).env("TZ", "XST-3")).ok();
    assert_eq!(east.applied_release(), Some(2));

    // A window that does not parse is a config error, refused at start.
    let bad = Device::with_id("gw-4", "stable", &op.root1(), "apply_window = [\"Caturday 02:00-04:00\"]\n");
    let r = run(&mut bad.agent(&["status"])).code(64);
    assert!(r.stderr.contains("apply_window") && r.stderr.contains("not a day"), "{}", r.stderr);
}

#[test]
fn a_paused_device_downloads_and_reports_but_applies_nothing_until_resumed() {
    let op = Operator::new();
    publish(&op, "1", &[]);
    let dev = polling_device(&op, "press-9", "");
    run_once(&dev).ok();
    let r = run(&mut dev.agent(&["pause"])).ok();
    assert!(r.stdout.contains("paused on this device until `ferry-agent resume`"), "{}", r.stdout);

    publish(&op, "2", &[]);
    let r = run_once(&dev).ok();
    assert!(r.all().contains("release 2 is ready; applying is paused"), "{}", r.all());
    assert_eq!(dev.applied_release(), Some(1));
    let status = dev.status();
    assert!(status["paused"].as_str().is_some_and(|p| p.contains("paused")), "{status}");
    assert!(event_kinds(&dev).contains(&"fetched".to_string()), "it still downloads");
    let r = dev.import(&op.mirror).ok();
    assert!(r.stdout.contains("not applied yet: applying is paused"), "an import obeys the pause too: {}", r.stdout);
    let r = run(dev.agent(&["import", "--now"]).arg(&op.mirror)).ok();
    assert!(r.stdout.contains("not applied yet"), "--now overrides windows, not a pause: {}", r.stdout);
    let human = run(&mut dev.agent(&["status"])).ok();
    assert!(human.stdout.contains("paused ") && human.stdout.contains("waiting "), "{}", human.stdout);

    // It says so in its reports.
    let db = op.dir.path().join("fleet.db");
    reports_home(&[&dev], &db);
    let fleet = fleet_json(&op, &db);
    assert_eq!(fleet["devices"][0]["paused"], true, "{fleet}");
    assert_eq!(fleet["devices"][0]["pending"], 2, "{fleet}");

    let r = run(&mut dev.agent(&["resume"])).ok();
    assert!(r.stdout.contains("resumed"), "{}", r.stdout);
    run_once(&dev).ok();
    assert_eq!(dev.applied_release(), Some(2));
    assert!(dev.status()["paused"].is_null());

    // A pause with an end lifts itself; a bad end is a usage error that changes nothing.
    let r = run(&mut dev.agent(&["pause", "--until", "yesterday-ish"])).code(64);
    assert!(r.stderr.contains("not a time"), "{}", r.stderr);
    assert!(dev.status()["paused"].is_null());
    run(&mut dev.agent(&["pause", "--until", "1h"])).ok();
    publish(&op, "3", &[]);
    run_once(&dev).ok();
    assert_eq!(dev.applied_release(), Some(2));
    let later = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 7200;
    run(dev.agent(&["run", "--once"]).env("FERRY_FAKE_NOW", later.to_string())).ok();
    assert_eq!(dev.applied_release(), Some(3), "the pause ran out");
}
