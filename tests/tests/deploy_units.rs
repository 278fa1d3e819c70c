//! What `deploy/` ships for devices, checked with the real tools: the exposure score of the
//! agent's systemd unit (`systemd-analyze security --offline=true`, at most 2.5, and the
//! figure the device guide states), `systemd-analyze verify` of every unit, the udev rule
//! naming a unit that exists, and the USB round trip driven through
//! `deploy/usb/ferry-usb-import --mounted DIR` against a real device: a release exported by
//! `bundler export` is applied, signed report batches land on the "stick", the operator's
//! acknowledgement comes back on it; a stick that carries no Ferry mirror is left alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_proto::report::ReportBatch;
use ferry_proto::{Limits, PublicKey};
use ferry_tests::fixture::{Device, Operator};
use ferry_tests::{binaries, run, trees, workspace_root, Run};

/// Highest exposure score accepted for a Ferry unit.
const MAX_EXPOSURE: f64 = 2.5;

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

/// `systemd-analyze`, or `None` (with a note) when this machine has none.
fn systemd_analyze() -> Option<&'static str> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => Some("systemd-analyze"),
        _ => {
            println!("SKIPPED: systemd-analyze is not installed; the unit checks need it");
            None
        }
    }
}

/// The overall exposure `systemd-analyze security --offline=true` gives `unit`.
fn exposure(analyze: &str, unit: &Path) -> f64 {
    let r = run(Command::new(analyze).args(["security", "--offline=true"]).arg(unit));
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no overall exposure for {}:\n{}", unit.display(), r.all()));
    let score = line.split(':').nth(1).and_then(|rest| rest.split_whitespace().next());
    score.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("unreadable exposure line {line:?}"))
}

#[test]
fn agent_unit_exposure_is_at_most_2_5_and_the_guide_states_it() {
    let Some(analyze) = systemd_analyze() else { return };
    let score = exposure(analyze, &deploy("systemd/ferry-agent.service"));
    assert!(score <= MAX_EXPOSURE, "ferry-agent.service exposure {score} > {MAX_EXPOSURE}");
    let guide = fs::read_to_string(workspace_root().join("docs/device-guide.md")).expect("docs/device-guide.md");
    let stated = format!("exposure score of `ferry-agent.service` is **{score:.1}**");
    assert!(guide.contains(&stated), "docs/device-guide.md does not say {stated:?}: update it to the measured score");

    // The USB services run the same hooks; they are held to the same bar. The template is
    // scored as an instance, as systemd would run it.
    let dir = tempfile::tempdir().expect("tempdir");
    let instance = dir.path().join("ferry-usb-import@sdb1.service");
    fs::copy(deploy("systemd/ferry-usb-import@.service"), &instance).expect("copy template");
    for unit in [instance, deploy("systemd/ferry-usb-import.service")] {
        let score = exposure(analyze, &unit);
        assert!(score <= MAX_EXPOSURE, "{} exposure {score} > {MAX_EXPOSURE}", unit.display());
    }
}

#[test]
fn units_verify_and_the_udev_rule_names_an_existing_unit() {
    let rule = fs::read_to_string(deploy("udev/90-ferry-usb.rules")).expect("udev rule");
    let wants = rule
        .split("SYSTEMD_WANTS}+=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the rule sets SYSTEMD_WANTS");
    assert_eq!(wants, "ferry-usb-import@%k.service");
    assert!(deploy("systemd/ferry-usb-import@.service").exists());
    for unit in ["ferry-usb-import@.service", "ferry-usb-import.service"] {
        let text = fs::read_to_string(deploy(&format!("systemd/{unit}"))).expect("unit");
        assert!(text.contains("ExecStart=/usr/libexec/ferry-usb-import "), "{unit} runs the installed script");
        assert!(text.contains("SyslogIdentifier=ferry-usb"), "{unit} logs under ferry-usb");
    }

    let Some(analyze) = systemd_analyze() else { return };
    // The units as installed, except that the programs they start are the ones built here
    // (verify insists they exist), plus the mount unit the path unit binds to, as the fstab
    // line in the device guide would make it.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = deploy("usb/ferry-usb-import");
    let mut units = Vec::new();
    for entry in fs::read_dir(deploy("systemd")).expect("deploy/systemd") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name").replace("@.", "@sdb1.");
        let text = fs::read_to_string(&path).expect("unit");
        let text = text
            .replace("/usr/bin/ferry-agent", &binaries().agent.display().to_string())
            .replace("/usr/libexec/ferry-usb-import", &script.display().to_string());
        fs::write(dir.path().join(&name), text).expect("write unit");
        units.push(name);
    }
    assert!(units.len() >= 4, "{units:?}");
    let mount = "media-ferry\\x2dusb.mount";
    fs::write(
        dir.path().join(mount),
        "[Mount]\nWhat=/dev/disk/by-label/FERRY\nWhere=/media/ferry-usb\nOptions=nofail,nosuid,nodev,noexec\n",
    )
    .expect("mount unit");
    units.push(mount.into());
    let r = run(Command::new(analyze).args(["verify", "--man=no"]).args(&units).current_dir(dir.path()));
    assert!(r.code == 0 && r.all().trim().is_empty(), "systemd-analyze verify {units:?}:\n{}", r.all());
}

/// `deploy/usb/ferry-usb-import ARGS` against `dev`, the way the units run it.
fn usb_import(dev: &Device, args: &[&str], stick: &Path) -> Run {
    let mut c = Command::new(deploy("usb/ferry-usb-import"));
    c.args(args).arg(stick).env("FERRY_AGENT", &binaries().agent).env("FERRY_CONFIG", &dev.config);
    run(&mut c)
}

#[track_caller]
fn assert_lines(r: &Run, lines: &[&str]) {
    for line in lines {
        assert!(r.stdout.lines().any(|l| l.contains(line)), "no line with {line:?}:\n{}", r.all());
    }
}

fn device_key(dev: &Device) -> PublicKey {
    let r = run(&mut dev.agent(&["identity", "--json"])).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("identity json");
    PublicKey::from_pem(v["public_key"].as_str().expect("pem")).expect("public key")
}

/// The verified report batches under `<mirror>/reports/test-device/`.
fn batches(mirror: &Path, key: &PublicKey) -> Vec<ReportBatch> {
    let dir = mirror.join("reports").join("test-device");
    let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
    entries
        .map(|e| {
            let body = fs::read(e.expect("entry").path()).expect("batch file");
            let envelope = zstd::decode_all(&body[..]).expect("zstd");
            ReportBatch::verify(&envelope, key, &Limits::default()).expect("batch verifies with the device key")
        })
        .collect()
}

fn fleet(op: &Operator) {
    op.write(&[
        ("app.conf", Some("port = 8080\n")),
        ("ferry.toml", Some("[hooks]\nactivate = \"echo activated > activated.txt\"\nhealth = \"test -f app.conf\"\n")),
    ]);
    op.commit("first");
    op.release("stable", None, &[]).ok();
}

#[test]
fn usb_stick_with_ferry_dir_is_imported_and_carries_the_reports_home() {
    let op = Operator::new();
    fleet(&op);
    let stick = tempfile::tempdir().expect("stick");
    let mirror = stick.path().join("ferry");
    run(op.bundler(&["export", "--mirror"]).arg(&op.mirror).args(["--channel", "stable", "--to"]).arg(&mirror)).ok();
    let dev = Device::new("stable", &op.root1(), "");

    // Plugged in at the device.
    let r = usb_import(&dev, &["--mounted"], stick.path()).ok();
    assert_lines(
        &r,
        &[
            "ferry-usb: ",
            "Ferry mirror found at",
            "applied release 1",
            "import done",
            "reports on the stick are up to date",
            "synced",
            "done",
        ],
    );
    assert_eq!(dev.applied_release(), Some(1));
    let expected = op.dir.path().join("expected");
    trees::git_archive(&op.repo, "HEAD", None, &expected);
    assert_eq!(fs::read_to_string(dev.current().join("activated.txt")).expect("hook ran"), "activated\n");
    fs::remove_file(dev.current().join("activated.txt")).expect("remove the hook's file");
    trees::assert_same(&expected, &dev.current());

    let key = device_key(&dev);
    let sent = batches(&mirror, &key);
    assert!(!sent.is_empty(), "no report batch on the stick:\n{}", r.all());
    let last = sent.iter().max_by_key(|b| b.records.last().map(|r| r.seq)).expect("a batch");
    assert_eq!(last.status.release, Some(1), "the batch carries the device's status");
    assert!(
        sent.iter().flat_map(|b| &b.records).any(|rec| rec.kind == "applied" && rec.release == Some(1)),
        "an `applied` record for release 1 is on the stick"
    );

    // At the operator's desk, then plugged in again: the acknowledgement empties the device's
    // outbox and the batch files it covers leave the stick.
    let db = op.dir.path().join("fleet.db");
    let r = run(op.bundler(&["reports", "import"]).arg(&mirror).arg("--db").arg(&db).arg("--enroll-on-first-use"));
    r.ok();
    assert!(mirror.join("acks").join("test-device.ack").exists());
    let r = usb_import(&dev, &["--mounted"], stick.path()).ok();
    assert_lines(&r, &["acknowledged through #", "up to date: release 1 is applied", "import done", "synced"]);
    let left = batches(&mirror, &key);
    let acked = sent.iter().flat_map(|b| &b.records).map(|rec| rec.seq).max().expect("records");
    assert!(
        left.iter().all(|b| b.records.iter().all(|rec| rec.seq > acked)),
        "acknowledged batches are removed from the stick"
    );
}

#[test]
fn usb_stick_labelled_ferry_carries_the_mirror_at_its_root() {
    let op = Operator::new();
    fleet(&op);
    let stick = tempfile::tempdir().expect("stick");
    run(op.bundler(&["export", "--mirror"]).arg(&op.mirror).args(["--channel", "stable", "--to"]).arg(stick.path()))
        .ok();
    let dev = Device::new("stable", &op.root1(), "");

    // Another label: the mirror at the root does not count.
    let r = usb_import(&dev, &["--label", "BACKUP", "--mounted"], stick.path()).ok();
    assert_lines(&r, &["not a Ferry stick, ignored"]);
    assert!(!dev.state.join("current").exists());

    let r = usb_import(&dev, &["--label", "FERRY", "--mounted"], stick.path()).ok();
    assert_lines(&r, &["Ferry mirror found at", "import done", "reports on the stick are up to date"]);
    assert_eq!(dev.applied_release(), Some(1));
    assert!(!batches(stick.path(), &device_key(&dev)).is_empty(), "reports at the stick's root");
}

#[test]
fn usb_stick_without_ferry_is_ignored_and_left_untouched() {
    let op = Operator::new();
    let dev = Device::new("stable", &op.root1(), "");
    let stick = tempfile::tempdir().expect("stick");
    fs::write(stick.path().join("holiday.jpg"), "not a release").expect("file");

    let r = usb_import(&dev, &["--mounted"], stick.path()).ok();
    assert_lines(&r, &["no ferry/ directory and label is not FERRY: not a Ferry stick, ignored"]);
    assert!(!r.all().contains("import"), "nothing imported:\n{}", r.all());
    let on_stick: Vec<_> = fs::read_dir(stick.path()).expect("stick").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(on_stick, ["holiday.jpg"], "nothing written on the stick");
    assert!(!dev.state.exists(), "the device was not touched");

    // A path that is not a block device is refused in one line, before anything happens.
    let r = usb_import(&dev, &["--device"], stick.path()).code(2);
    assert_lines(&r, &["is not a block device"]);
}

#[test]
fn device_guide_explains_every_reason() {
    // The codes as proto/src/reason.rs spells them (`Reason::X => "code",`), so a reason
    // added there without a troubleshooting entry fails here.
    let source = fs::read_to_string(workspace_root().join("proto/src/reason.rs")).expect("reason.rs");
    let codes: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Reason::"))
        .filter_map(|l| l.split_once("=> \"").and_then(|(_, rest)| rest.split('"').next()))
        .collect();
    assert!(codes.len() >= 19 && codes.contains(&"health-failed"), "{codes:?}");
    let guide = fs::read_to_string(workspace_root().join("docs/device-guide.md")).expect("docs/device-guide.md");
    let missing: Vec<&&str> = codes.iter().filter(|c| !guide.contains(&format!("\n### `{c}`\n"))).collect();
    assert!(missing.is_empty(), "docs/device-guide.md has no troubleshooting entry for {missing:?}");
}
