//! `ferry-agent run` as a systemd service, through the real binary: readiness, status and
//! watchdog notifications on `$NOTIFY_SOCKET`; SIGTERM in the middle of a slow download
//! (prompt exit, nothing partial, committed chunks kept and resumed); SIGHUP reloading the
//! config (between polls and in the middle of a poll's backoff) and refusing an invalid one;
//! drift checked on its own timer, recorded and restored; the download rate cap held over
//! a 30 s transfer; logs fit for journald.
//!
//! Convergence under chaos, index freshness, mirror failover and resume after `kill -9`
//! are in `daemon.rs`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::chaos::{ChaosServer, Fault, Schedule};
use ferry_tests::fixture::{Device, Operator};
use ferry_tests::service::{payload_rows, publish_random_release, wait_for, Daemon, NotifySocket};
use ferry_tests::{binaries, run};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The keys `Device::new` writes before the extra TOML.
const BASE: &str =
    "channel = \"stable\"\ntrust_root = \"root.1\"\nstate_dir = \"state\"\ndevice_id = \"test-device\"\n";

fn quoted(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// Release `n` of a small tree (`app.conf` says which release it is).
fn publish_small(op: &Operator, n: u64) {
    op.write(&[("app.conf", Some(&format!("release = {n}\n"))), ("doc/readme.txt", Some("hello\n"))]);
    op.commit(&format!("release {n}"));
    op.release("stable", None, &["--level", "1"]).ok();
}

/// Rewrites the device's config: the base keys, then `rest`.
fn rewrite_config(dev: &Device, rest: &str) {
    let tmp = dev.dir.path().join("agent.toml.new");
    fs::write(&tmp, format!("{BASE}{rest}")).expect("write config");
    fs::rename(&tmp, &dev.config).expect("replace config");
}

/// The events of `history --json`, newest first, as (kind, release, message).
fn events(dev: &Device) -> Vec<(String, Option<u64>, String)> {
    let r = run(&mut dev.agent(&["history", "--json", "-n", "200"])).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("history json");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["release"].as_u64(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Temporaries an interrupted apply would leave (`current.tmp-*`, `slots/.trash-*`).
fn strays(state: &Path) -> Vec<String> {
    let names = |d: &Path| -> Vec<String> {
        fs::read_dir(d)
            .map(|e| e.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let mut out: Vec<String> = names(state).into_iter().filter(|n| n.starts_with("current.tmp-")).collect();
    out.extend(names(&state.join("slots")).into_iter().filter(|n| n != "a" && n != "b").map(|n| format!("slots/{n}")));
    out
}

/// A loopback port nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}/", l.local_addr().expect("addr"))
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping() {
    let op = Operator::new();
    publish_small(&op, 1);
    let dev =
        Device::new("stable", &op.root1(), &format!("mirrors = [{}]\npoll_interval = \"1h\"\n", quoted(&op.mirror)));
    let notify = NotifySocket::bind();
    let socket = notify.path().display().to_string();
    let mut d = Daemon::start(&dev, &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")]);

    let (ready, _) = notify
        .wait(0, secs(60), |m| m.starts_with("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {:?}\n{}", notify.texts(), d.log()));
    let texts = notify.texts();
    let ready_text = &notify.messages()[ready].1;
    assert!(ready_text.contains("\nSTATUS=polling 1 mirror(s) every 1h"), "{ready_text:?}");
    // After the poll: a status naming what it did.
    notify
        .wait(ready, secs(60), |m| m == "STATUS=applied release 1")
        .unwrap_or_else(|| panic!("no status after the poll: {texts:?}\n{}", d.log()));
    assert!(notify.texts().iter().any(|m| m == "STATUS=polling"), "{:?}", notify.texts());

    // Watchdog pings every WATCHDOG_USEC / 2 = 200 ms, from start to stop, never missing
    // the 400 ms deadline systemd would kill at. Watch the idle daemon for 2 s.
    std::thread::sleep(secs(2));
    let status = d.stop(secs(5));
    assert_eq!(status.code(), Some(0), "{}", d.log());
    let all = notify.messages();
    let stopping = all.iter().position(|(_, m)| m == "STOPPING=1");
    assert!(stopping.is_some(), "no STOPPING=1: {:?}", notify.texts());
    let pings: Vec<Instant> = all.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| *t).collect();
    let gaps: Vec<u128> = pings.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert!(pings.len() >= 10, "too few watchdog pings: {gaps:?}");
    let mut sorted = gaps.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!((170..=260).contains(&median), "median watchdog interval {median} ms: {gaps:?}");
    assert!(sorted.last().is_some_and(|&g| g < 400), "a watchdog gap reached the 400 ms deadline: {gaps:?}");
    // Order: READY first (after any early pings), STOPPING last but for stray pings.
    let first_other = all.iter().position(|(_, m)| m != "WATCHDOG=1");
    assert_eq!(first_other, Some(ready), "{:?}", notify.texts());
    assert!(all[stopping.unwrap_or(0)..].iter().skip(1).all(|(_, m)| m == "WATCHDOG=1"), "{:?}", notify.texts());
}

#[test]
fn sigterm_during_a_slow_download_exits_promptly_and_the_next_run_resumes() {
    let op = Operator::new();
    publish_small(&op, 1);
    let server = ChaosServer::start(&op.mirror, Schedule::clean());
    let dev =
        Device::new("stable", &op.root1(), &format!("mirrors = [\"{}\"]\npoll_interval = \"1h\"\n", server.url()));
    run(&mut dev.agent(&["run", "--once"])).ok();
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"));

    // Release 2: 4 MiB that trickle at 400 KB/s (about 10 s), so the first 1 MiB chunk is
    // committed after about 2.6 s and the download is far from done.
    publish_random_release(&op, "stable", 4 << 20, 2, "two");
    server.set_schedule(Schedule::clean().always("payloads/", Fault::Trickle { bytes_per_sec: 400_000 }));
    let mut d = Daemon::start(&dev, &[]);
    let stored = wait_for(secs(60), || payload_rows(&dev.state).into_iter().find(|r| !r.verified && r.stored > 0))
        .unwrap_or_else(|| panic!("no chunk committed: {:?}\n{}", payload_rows(&dev.state), d.log()));
    let t = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(secs(5)).unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", d.log()));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(took < secs(5), "{took:?}");

    // Nothing partial: release 1 still active, no open journal entry, no temporaries.
    assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
    let s = dev.status();
    assert_eq!(s["applied"]["release"], 1, "{s}");
    assert_eq!(s["trial"], "none", "{s}");
    assert_eq!(s["last_apply"]["state"], "committed", "{s}");
    assert_eq!(strays(&dev.state), Vec::<String>::new());
    // Committed chunks kept.
    let rows = payload_rows(&dev.state);
    let row = rows.iter().find(|r| r.digest == stored.digest).expect("the payload row");
    assert!(row.stored >= stored.stored && row.stored < row.size && !row.verified, "{row:?}");

    // The next run resumes from what was committed, never from byte 0.
    server.set_schedule(Schedule::clean());
    server.reset_counters();
    let r = run(&mut dev.agent(&["run", "--once"]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(dev.applied_release(), Some(2));
    let served = server.bytes_served_for("payloads/");
    assert_eq!(served, row.size - row.stored, "served {served} of {} with {} stored", row.size, row.stored);
    let first = server.log().into_iter().find(|s| s.path.starts_with("payloads/")).expect("a payload request");
    assert_eq!(first.status, 206, "{first:?}");
}

#[test]
fn sigterm_during_an_apply_finishes_the_apply_then_stops() {
    let op = Operator::new();
    // The activate hook says it started, then takes 3 s.
    op.write(&[(
        "ferry.toml",
        Some("[hooks]\nactivate = \"touch \\\"$FERRY_SLOT_PATH/../../activating\\\"; sleep 3\"\n"),
    )]);
    publish_small(&op, 1);
    let dev =
        Device::new("stable", &op.root1(), &format!("mirrors = [{}]\npoll_interval = \"1h\"\n", quoted(&op.mirror)));
    let notify = NotifySocket::bind();
    let socket = notify.path().display().to_string();
    let mut d = Daemon::start(&dev, &[("NOTIFY_SOCKET", &socket)]);
    wait_for(secs(60), || dev.state.join("activating").exists().then_some(()))
        .unwrap_or_else(|| panic!("the activate hook did not start:\n{}", d.log()));
    let t = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(secs(30)).unwrap_or_else(|| panic!("still running:\n{}", d.log()));
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(t.elapsed() >= Duration::from_secs(1), "exited before the hook could finish: {:?}", t.elapsed());
    // The apply finished and was booked before the stop.
    let s = dev.status();
    assert_eq!(
        (s["applied"]["release"].as_u64(), s["last_apply"]["state"].as_str()),
        (Some(1), Some("committed")),
        "{s}"
    );
    assert_eq!(s["trial"], "none", "{s}");
    let texts = notify.texts();
    let pos = |m: &str| texts.iter().position(|t| t == m).unwrap_or_else(|| panic!("no {m:?} in {texts:?}"));
    assert!(pos("STATUS=an apply is running; it finishes first") < pos("STATUS=applied release 1"), "{texts:?}");
    assert!(pos("STATUS=applied release 1") < pos("STOPPING=1"), "{texts:?}");
    assert_eq!(strays(&dev.state), Vec::<String>::new());
}

#[test]
fn sighup_in_the_middle_of_a_dead_mirrors_backoff_reloads_and_polls_at_once() {
    let op = Operator::new();
    publish_small(&op, 1);
    // Default backoff: a dead mirror keeps the first poll in retries for a minute or more.
    let dev = Device::new("stable", &op.root1(), &format!("mirrors = [\"{}\"]\npoll_interval = \"1h\"\n", dead_url()));
    let notify = NotifySocket::bind();
    let socket = notify.path().display().to_string();
    let d = Daemon::start(&dev, &[("NOTIFY_SOCKET", &socket)]);
    notify.wait(0, secs(60), |m| m == "STATUS=polling").unwrap_or_else(|| panic!("no poll: {}", d.log()));
    assert!(d.wait_log("fetch failed; retrying", secs(30)), "{}", d.log());

    rewrite_config(&dev, &format!("mirrors = [{}]\npoll_interval = \"1h\"\n", quoted(&op.mirror)));
    let at = notify.messages().len();
    let t = Instant::now();
    d.signal("HUP");
    let (reloading, _) = notify
        .wait(at, secs(10), |m| m.starts_with("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1: {:?}\n{}", notify.texts(), d.log()));
    notify
        .wait(reloading, secs(10), |m| m.starts_with("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 after the reload: {:?}", notify.texts()));
    notify
        .wait(reloading, secs(30), |m| m == "STATUS=applied release 1")
        .unwrap_or_else(|| panic!("did not converge after the reload: {:?}\n{}", notify.texts(), d.log()));
    assert!(t.elapsed() < secs(30), "{:?}", t.elapsed());
    assert!(d.log().contains("configuration reloaded"), "{}", d.log());
    assert_eq!(dev.applied_release(), Some(1));
}

#[test]
fn sighup_between_polls_reloads_and_an_invalid_config_is_refused() {
    let op = Operator::new();
    publish_small(&op, 1);
    let good = format!("mirrors = [{}]\npoll_interval = \"1h\"\n", quoted(&op.mirror));
    let dev = Device::new("stable", &op.root1(), &good);
    let notify = NotifySocket::bind();
    let socket = notify.path().display().to_string();
    let mut d = Daemon::start(&dev, &[("NOTIFY_SOCKET", &socket)]);
    notify
        .wait(0, secs(60), |m| m == "STATUS=applied release 1")
        .unwrap_or_else(|| panic!("not converged: {:?}\n{}", notify.texts(), d.log()));

    // An invalid config: refused with a line naming the key; the daemon keeps running.
    rewrite_config(&dev, &format!("{good}chanel = \"typo\"\n"));
    d.signal("HUP");
    assert!(d.wait_log("reload refused", secs(10)), "{}", d.log());
    let line = d.log().lines().find(|l| l.contains("reload refused")).map(str::to_owned).unwrap_or_default();
    assert!(line.contains("chanel") && line.contains("ERROR"), "{line}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.exited().is_none(), "the daemon died on an invalid config:\n{}", d.log());

    // Release 2 appears; the old config (poll every hour) would not see it for an hour. A
    // valid reload between polls polls at once and converges.
    publish_small(&op, 2);
    let at = notify.messages().len();
    rewrite_config(&dev, &good);
    d.signal("HUP");
    notify
        .wait(at, secs(30), |m| m == "STATUS=applied release 2")
        .unwrap_or_else(|| panic!("no poll after the reload: {:?}\n{}", notify.texts(), d.log()));
    assert_eq!(dev.applied_release(), Some(2));
    let status = d.stop(secs(10));
    assert_eq!(status.code(), Some(0), "{}", d.log());
}

#[test]
fn drift_is_checked_on_its_own_timer_recorded_and_restored() {
    let op = Operator::new();
    publish_small(&op, 1);
    let config = |restore: bool| {
        format!(
            "mirrors = [{}]\npoll_interval = \"1h\"\n[drift]\ninterval = \"1s\"\nrestore = {restore}\n",
            quoted(&op.mirror)
        )
    };
    let dev = Device::new("stable", &op.root1(), &config(false));
    let mut d = Daemon::start(&dev, &[]);
    // (Waiting on the log, not on `status`: see the migration race pinned below.)
    assert!(d.wait_log("applied release 1", secs(60)), "not converged:\n{}", d.log());
    // Tampered after the first poll: only a drift timer independent of the hourly poll sees it.
    std::thread::sleep(secs(2));
    fs::write(dev.current().join("app.conf"), "release = 666\n").expect("tamper");
    let drift = wait_for(secs(20), || events(&dev).into_iter().find(|(k, _, _)| k == "drift"))
        .unwrap_or_else(|| panic!("no drift event:\n{}", d.log()));
    assert_eq!(drift.1, Some(1));
    assert!(drift.2.contains("app.conf"), "{drift:?}");
    assert_eq!(fs::read_to_string(dev.current().join("app.conf")).expect("read"), "release = 666\n", "not restored");
    assert_eq!(d.stop(secs(10)).code(), Some(0), "{}", d.log());

    // With restore on: the release is written afresh into the other slot and switched to.
    rewrite_config(&dev, &config(true));
    let d = Daemon::start(&dev, &[]);
    let dev = &dev;
    let restored = |slot: &'static str| {
        move || {
            (dev.current_target().as_deref() == Some(slot)
                && fs::read_to_string(dev.current().join("app.conf")).ok().as_deref() == Some("release = 1\n"))
            .then_some(())
        }
    };
    wait_for(secs(30), restored("slots/b")).unwrap_or_else(|| panic!("not restored into slots/b:\n{}", d.log()));
    let s = dev.status();
    assert_eq!((s["applied"]["release"].as_u64(), s["slot"].as_str()), (Some(1), Some("b")), "{s}");
    // And on the timer again, back into slots/a.
    std::thread::sleep(secs(2));
    fs::remove_file(dev.current().join("doc/readme.txt")).expect("tamper");
    wait_for(secs(30), restored("slots/a")).unwrap_or_else(|| panic!("not restored into slots/a:\n{}", d.log()));
    assert!(dev.current().join("doc/readme.txt").exists());
    let ev = events(dev);
    assert!(ev.iter().any(|(k, _, m)| k == "drift" && m.contains("doc/readme.txt")), "{ev:?}");
    assert!(ev.iter().filter(|(k, _, _)| k == "drift-restore").count() >= 2, "{ev:?}");
}

/// "The rate cap holds within 10 % over a 30 s transfer." About 35 s; kept in the default
/// run since it is a stated requirement.
#[test]
fn rate_cap_holds_within_ten_percent_over_a_thirty_second_transfer() {
    const RATE: u64 = 200_000;
    let op = Operator::new();
    // The payload (zstd at level 1 of random files) is a little over the content.
    publish_random_release(&op, "stable", (RATE * 30) as usize, 5, "one");
    let server = ChaosServer::start(&op.mirror, Schedule::clean());
    let dev = Device::new(
        "stable",
        &op.root1(),
        &format!("mirrors = [\"{}\"]\npoll_interval = \"1h\"\n[fetch]\nrate_limit = {RATE}\n", server.url()),
    );
    let mut d = Daemon::spawn(dev.agent(&["run", "--once"]), &[]);
    let start = wait_for(secs(60), || (server.requests_for("payloads/") > 0).then(Instant::now))
        .unwrap_or_else(|| panic!("no payload request:\n{}", d.log()));
    let (end, size) = wait_for(secs(90), || {
        payload_rows(&dev.state)
            .into_iter()
            .find(|r| r.size > 0 && r.stored == r.size)
            .map(|r| (Instant::now(), r.size))
    })
    .unwrap_or_else(|| panic!("download not finished in 90 s: {:?}\n{}", payload_rows(&dev.state), d.log()));
    let status = d.wait_exit(secs(60)).expect("run --once ends");
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert_eq!(server.bytes_served_for("payloads/"), size, "one transfer, no retries");
    let secs = (end - start).as_secs_f64();
    let rate = size as f64 / secs;
    eprintln!(
        "rate cap {RATE} B/s: {size} bytes in {secs:.2} s = {rate:.0} B/s ({:+.2} %)",
        (rate / RATE as f64 - 1.0) * 100.0
    );
    assert!(secs >= 25.0, "the transfer must last about 30 s: {secs:.2} s");
    assert!((rate - RATE as f64).abs() <= RATE as f64 * 0.10, "{rate:.0} B/s against a cap of {RATE}");
}

fn is_level(word: &str) -> bool {
    matches!(word, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
}

#[test]
fn under_journald_log_lines_carry_no_timestamp_and_no_colour() {
    let op = Operator::new();
    publish_small(&op, 1);
    let dev =
        Device::new("stable", &op.root1(), &format!("mirrors = [{}]\npoll_interval = \"1h\"\n", quoted(&op.mirror)));
    let once = |env: &[(&str, &str)]| {
        let mut d = Daemon::spawn(dev.agent(&["run", "--once"]), env);
        let status = d.wait_exit(secs(60)).expect("run --once ends");
        assert_eq!(status.code(), Some(0), "{}", d.log());
        d.log()
    };
    let journal = once(&[("JOURNAL_STREAM", "1:1")]);
    let lines: Vec<&str> = journal.lines().collect();
    assert!(lines.iter().any(|l| l.contains("applied release 1")), "{journal}");
    for l in &lines {
        assert!(!l.contains('\x1b'), "ANSI escape in {l:?}");
        let first = l.split_whitespace().next().unwrap_or_default();
        assert!(is_level(first), "a line that does not start with its level: {l:?}");
    }
    // Without JOURNAL_STREAM the same lines start with a timestamp (so the check above bites).
    let plain = once(&[]);
    let l = plain.lines().find(|l| l.contains("converged")).unwrap_or_else(|| panic!("{plain}"));
    assert!(l.starts_with("20") && l.split_whitespace().next().is_some_and(|t| t.ends_with('Z')), "{l:?}");

    // On a terminal the agent colours its logs, unless journald is the reader: run it under
    // a pseudo-terminal with script(1) when that is installed.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("script(1) not installed: the terminal half of this test is skipped");
        return;
    }
    let on_tty = |journal: bool| {
        let cmd = format!(
            "{}{} --config {} run --once",
            if journal { "JOURNAL_STREAM=1:1 " } else { "" },
            binaries().agent.display(),
            dev.config.display()
        );
        let r = run(Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("JOURNAL_STREAM")
            .env_remove("FERRY_LOG")
            .env_remove("NO_COLOR"));
        assert_eq!(r.code, 0, "{}", r.all());
        r.stdout
    };
    let coloured = on_tty(false);
    assert!(coloured.contains('\x1b'), "no colour on a terminal (is the pty check wrong?): {coloured:?}");
    let journald = on_tty(true);
    assert!(journald.contains("converged"), "{journald:?}");
    assert!(!journald.contains('\x1b'), "ANSI escapes under journald: {journald:?}");
}

/// Regression: `ferry-agent status` (or `import`) opening a fresh `ferry.db` while the
/// daemon starts. Both used to read `user_version` 0 outside a write transaction and both
/// create the tables; the loser failed with "table trust_roots already exists" and, when
/// the loser was the daemon, the service died at its first start. `Store::migrate` now
/// reads and bumps the version inside one `BEGIN IMMEDIATE` transaction.
#[test]
fn status_while_the_daemon_creates_its_database_never_fails_either() {
    let op = Operator::new();
    publish_small(&op, 1);
    for round in 0..8 {
        let dev = Device::new(
            "stable",
            &op.root1(),
            &format!("mirrors = [{}]\npoll_interval = \"1h\"\n", quoted(&op.mirror)),
        );
        let mut d = Daemon::start(&dev, &[]);
        let readers: Vec<_> = (0..3)
            .map(|_| {
                dev.agent(&["status", "--json"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("status")
            })
            .collect();
        for r in readers {
            let out = r.wait_with_output().expect("status");
            assert!(out.status.success(), "round {round}: status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(d.wait_log("applied release 1", secs(60)), "round {round}: the daemon did not converge:\n{}", d.log());
        assert!(d.exited().is_none(), "round {round}: the daemon died:\n{}", d.log());
    }
}
