//! The fleet dashboard: what each state means, and that nothing a device sent reaches a
//! page unescaped.

use super::*;

const NOW: u64 = 1_750_000_000;

fn device(id: &str) -> DeviceRow {
    DeviceRow {
        device_id: id.into(),
        key_id: "ab".repeat(32),
        enrolled_at: NOW - 1000,
        enrolled_by: "operator".into(),
        acked: 3,
        last_seen: Some(NOW - 60),
        status_created: Some(NOW - 61),
        channel: Some("stable".into()),
        labels: vec![("site".into(), "plant7".into())],
        release: Some(3),
        commit: None,
        slot: Some("a".into()),
        health: Some("healthy".into()),
        last_failure: None,
        last_failure_message: None,
        newest_record_failed: false,
        drift_paths: 0,
        paused: false,
        dropped_total: 0,
        batches: 1,
    }
}

fn states(d: &DeviceRow) -> Vec<&'static str> {
    DeviceState::ALL.into_iter().filter(|s| s.holds(d, NOW)).map(DeviceState::name).collect()
}

#[test]
fn states_are_defined_on_the_last_status() {
    assert_eq!(states(&device("ok")), ["healthy"]);
    let rolled = DeviceRow {
        health: Some("rolled-back".into()),
        last_failure: Some("health-failed".into()),
        newest_record_failed: true,
        ..device("rb")
    };
    assert_eq!(states(&rolled), ["failing", "rolled-back"]);
    let rejected = DeviceRow { last_failure: Some("signature".into()), newest_record_failed: true, ..device("r") };
    assert_eq!(states(&rejected), ["failing"]);
    let recovered = DeviceRow { last_failure: Some("health-failed".into()), ..device("r") };
    assert_eq!(states(&recovered), ["healthy"], "an old failure does not make a device failing");
    assert_eq!(states(&DeviceRow { drift_paths: 2, ..device("d") }), ["drift"]);
    let old = DeviceRow { last_seen: Some(NOW - STALE_AFTER - 1), drift_paths: 1, ..device("s") };
    assert_eq!(states(&old), ["drift", "stale"]);
    assert_eq!(states(&DeviceRow { last_seen: Some(NOW - STALE_AFTER), ..device("s") }), ["healthy"]);
    assert_eq!(states(&DeviceRow { last_seen: None, health: None, ..device("n") }), ["stale"]);
    assert_eq!(DeviceState::parse("rolled-back"), Some(DeviceState::RolledBack));
    assert_eq!(DeviceState::parse("Healthy"), None);
}

#[test]
fn device_supplied_strings_are_escaped_everywhere_they_appear() {
    let hostile = "<img src=x onerror=alert(1)>";
    let d = DeviceRow {
        channel: Some("\"><marquee>".into()),
        labels: vec![("k'".into(), "<blink>".into())],
        health: Some("<u>".into()),
        last_failure: Some("<s>".into()),
        last_failure_message: Some("&<q>".into()),
        newest_record_failed: true,
        commit: Some("<em>".into()),
        ..device(hostile)
    };
    let history = [HistoryRecord {
        epoch: 1,
        seq: 3,
        at: NOW,
        kind: "<kbd>".into(),
        release: Some(3),
        reason: Some("<var>".into()),
        message: "</td><script>x</script>".into(),
        received_at: NOW,
    }];
    let mut out = String::new();
    render_device(&mut out, &d, &history, 1, NOW).expect("render");
    let filter = Filter { channel: Some("\"><marquee>".into()), state: None };
    render_fleet(&mut out, std::slice::from_ref(&d), &[], &filter, NOW).expect("render");
    for tag in ["<img", "<marquee", "<blink", "<u>", "<s>", "<q>", "<em>", "<kbd>", "<var>", "<script"] {
        assert!(!out.contains(tag), "{tag} reached the page unescaped:\n{out}");
    }
    assert!(out.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(out.contains("href=\"/devices/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E\""), "{out}");
    assert!(out.contains("href=\"/?channel=%22%3E%3Cmarquee%3E\""), "{out}");
}

#[test]
fn utc_times_and_broken_clocks() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(1_750_000_000), "2025-06-15 15:06:40 UTC");
    assert_eq!(utc(u64::MAX), format!("@{}", u64::MAX));
}
