//! Crash safety (DESIGN "The agent", "Reports"): `ferry-agent import` and `ferry-agent run
//! --once` (download from `bundler serve` over loopback HTTP, apply, report upload to the
//! same server) are killed with `SIGKILL` at every named step (the agent's crash points,
//! via `FAILPOINTS`), `import` panics and fails at each slot failpoint, and both are killed
//! at seeded-random instants; after each crash and after the restart that follows,
//! [`check_invariants`] must hold — `current` names one complete tree of a signed release,
//! the journal agrees with it, `ferry.db` passes `integrity_check` — and the restart must
//! converge: a healthy release ends committed, an unhealthy one rolled back and refused,
//! with no temporaries left. For `run --once`, the [`ReportLedger`] also checks after every
//! crash and once the device delivered everything that the fleet database holds each report
//! the device made exactly once, as it made it (and passes `integrity_check`).
//!
//! The crash points are read from `agent/src/crash.rs` and checked against every
//! `crash_point!` in the agent's source (the slot failpoints come from `agent/src/slots.rs`),
//! so a point added there without an entry in [`EXPECTED`] fails this test instead of going
//! unexercised.
//!
//! Environment:
//! * `FERRY_CRASH_RANDOM=N`: how many random runs (default 10, what CI runs), taking turns
//!   over [`RANDOM_MIX`]: small and bulk trees, `import` and `run --once`; every other block
//!   of six is killed twice (the second kill lands in the recovery). The full soak (over
//!   1,000 crash points) is in RELIABILITY.md, "Crash soak".
//! * `FERRY_CRASH_JOBS=J`: random runs in parallel (default 1). Each run has its own
//!   device; the windows adapt to the load.
//! * `FERRY_CRASH_SEED=S`: the PRNG seed (decimal or `0x` hex), printed in the summary. It
//!   fixes which fraction of the window each kill comes at; the instants themselves move
//!   with the machine's speed, so a replay lands near, not exactly on, the same step.
//!
//! Run with `--nocapture` to see one line per crash and the summary.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_tests::crash::{
    check_invariants, copy_dir, copy_state, crash_points, crash_points_in_source, slot_failpoints, Observed, Phase,
    Pristine, ReleaseTrees, ReportLedger, SplitMix64, Violation,
};
use ferry_tests::fixture::{Device, Operator};
use ferry_tests::serve_process::ServeProcess;
use ferry_tests::{binaries, run, Run};

const CHANNEL: &str = "stable";
const DEFAULT_RANDOM: u64 = 10;
const DEFAULT_SEED: u64 = 0xF3A7_C0DE;
/// Files in the bulk directory of releases 4 and 5: enough that an import spends a few
/// hundred milliseconds writing and fsyncing a slot, so random kills land inside it.
const BULK_FILES: usize = 500;
/// Random kills come at up to this multiple of an uninterrupted run's duration: the runs
/// that finish first tell how long one takes now.
const KILL_SPAN: f64 = 1.2;
/// Report records added to the outbox of every device `run --once` crashes on, besides the
/// events its earlier runs recorded: three batches (`outbox::MAX_BATCH_RECORDS` is 500), so
/// an upload takes long enough for random kills to land in it and a crash can come between
/// two acknowledgements.
const REPORT_BACKLOG: usize = 1200;
/// `run --once` runs after the crashes until the device converged and delivered every
/// report; more means it never does.
const MAX_DAEMON_RESTARTS: usize = 3;

/// Which command a crash run interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    /// `ferry-agent import <mirror copy>`.
    Import,
    /// `ferry-agent run --once` against `bundler serve` of the mirror (download, apply,
    /// report upload).
    Daemon,
}

/// Which releases pass a crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paths {
    /// Healthy and failing ones.
    Both,
    /// Only a healthy one (the commit).
    Healthy,
    /// Only a failing one (health retries, rollback).
    Failing,
    /// The apply that empties the inactive slot and checks the tree out whole: a device's
    /// first delta (slot B never written) and a failing release whose inactive slot cannot
    /// be updated in place.
    Whole,
    /// Only the in-place update of the inactive slot (a failing release).
    InPlace,
}

/// Where a crash point leaves the release being applied.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Not journaled yet: `current` still holds the old release.
    Before,
    /// Newest journal row for the release in this state; whether `current` already names
    /// the new release's slot.
    Open(&'static str, bool),
    /// The apply is over: a healthy release `committed` in `current`, a failing one
    /// `rolled-back` with `current` on the old release.
    Finished,
}

/// One crash point, as `agent/src/crash.rs` documents it.
struct Expect {
    point: &'static str,
    at: At,
    paths: Paths,
    via: Via,
}

const fn expect(point: &'static str, at: At, paths: Paths, via: Via) -> Expect {
    Expect { point, at, paths, via }
}

const EXPECTED: &[Expect] = &[
    expect("intake::before-store", At::Before, Paths::Both, Via::Import),
    expect("intake::after-chunk", At::Before, Paths::Both, Via::Import),
    expect("download::after-chunk", At::Before, Paths::Both, Via::Daemon),
    expect("download::after-verify", At::Before, Paths::Both, Via::Daemon),
    expect("apply::after-import", At::Before, Paths::Both, Via::Import),
    expect("apply::after-validate", At::Before, Paths::Both, Via::Import),
    expect("apply::after-discard", At::Open("started", false), Paths::InPlace, Via::Import),
    expect("apply::after-prepare", At::Open("started", false), Paths::Whole, Via::Import),
    expect("apply::after-checkout", At::Open("started", false), Paths::Both, Via::Import),
    expect("apply::after-record", At::Open("started", false), Paths::Both, Via::Import),
    expect("apply::before-switch", At::Open("switching", false), Paths::Both, Via::Import),
    expect("apply::after-switch", At::Open("trial", true), Paths::Both, Via::Import),
    expect("apply::before-health", At::Open("trial", true), Paths::Both, Via::Import),
    expect("hooks::health-retry", At::Open("trial", true), Paths::Failing, Via::Import),
    expect("apply::after-commit", At::Finished, Paths::Healthy, Via::Import),
    expect("apply::rollback::before-switch", At::Open("rolling-back", true), Paths::Failing, Via::Import),
    expect("apply::rollback::after-switch", At::Open("rolling-back", false), Paths::Failing, Via::Import),
    expect("apply::rollback::after-hooks", At::Open("rolling-back", false), Paths::Failing, Via::Import),
    expect("apply::rollback::after-discard", At::Open("rolling-back", false), Paths::Failing, Via::Import),
    expect("apply::rollback::before-refuse", At::Finished, Paths::Failing, Via::Import),
    expect("upload::after-post", At::Finished, Paths::Both, Via::Daemon),
    expect("outbox::ack-before-commit", At::Finished, Paths::Both, Via::Daemon),
    expect("upload::after-ack", At::Finished, Paths::Both, Via::Daemon),
];

/// One apply to crash: a device holding release `from` takes the mirror as it was right
/// after release `to` was published.
#[derive(Debug, Clone, Copy)]
struct Flow {
    from: u64,
    to: u64,
    /// Release `to` passes its health check.
    healthy: bool,
    /// The inactive slot of the forked device loses its record before the run, so the apply
    /// empties it and checks out the whole tree instead of updating it in place.
    whole: bool,
}

/// Small trees: every named crash point.
const SMALL_HEALTHY: Flow = Flow { from: 1, to: 2, healthy: true, whole: false };
const SMALL_FAILING: Flow = Flow { from: 2, to: 3, healthy: false, whole: false };
/// The same release as [`SMALL_FAILING`], into an inactive slot that is emptied first.
const SMALL_FAILING_WHOLE: Flow = Flow { whole: true, ..SMALL_FAILING };
/// Bulk trees: random instants.
const BIG_HEALTHY: Flow = Flow { from: 2, to: 4, healthy: true, whole: false };
const BIG_FAILING: Flow = Flow { from: 4, to: 5, healthy: false, whole: false };
/// The random runs, in turn: small trees are cheap and their whole protocol (download,
/// import, checkout, switch, health checks, rollback, report upload) fits in a short window;
/// bulk trees spend long enough writing a slot that kills land inside the checkout.
const RANDOM_MIX: &[(Via, Flow)] = &[
    (Via::Import, SMALL_HEALTHY),
    (Via::Import, SMALL_FAILING),
    (Via::Daemon, SMALL_HEALTHY),
    (Via::Daemon, SMALL_FAILING),
    (Via::Import, BIG_HEALTHY),
    (Via::Import, BIG_FAILING),
];

/// How a run is stopped.
#[derive(Debug, Clone, Copy)]
enum Kill<'a> {
    /// `FAILPOINTS=<point>=return`: the agent sends itself `SIGKILL` there.
    CrashPoint(&'a str),
    /// `FAILPOINTS=<point>=panic`: a panic (exit 101) at a slot failpoint.
    Panic(&'a str),
    /// `FAILPOINTS=<point>=return` at a slot failpoint: an injected I/O error (exit 1).
    Error(&'a str),
    /// `SIGKILL` from outside after this long.
    After(Duration),
}

/// A `bundler serve` of one mirror copy, taking reports into its own fleet database
/// (devices enrolled on first use); SIGKILLed on drop.
struct Server {
    process: ServeProcess,
    db: PathBuf,
}

impl Server {
    fn start(mirror: &Path, db: PathBuf) -> Server {
        let mut cmd = Command::new(&binaries().bundler);
        cmd.args(["serve", "--enroll-on-first-use", "--listen", "127.0.0.1:0", "--mirror"])
            .arg(mirror)
            .arg("--db")
            .arg(&db)
            .env_remove("FERRY_LOG");
        Server { process: ServeProcess::spawn(&mut cmd), db }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// Releases 1–5 on one channel, the mirror as it was after each (as a directory and served
/// over HTTP), and pristine devices holding releases 1, 2 and 4.
struct World {
    op: Operator,
    trees: ReleaseTrees,
    mirrors: BTreeMap<u64, PathBuf>,
    servers: BTreeMap<u64, Server>,
    pristine: BTreeMap<u64, Pristine>,
    /// How long an uninterrupted run of each flow's `to` release took, by command.
    durations: BTreeMap<(Via, u64), Duration>,
    /// Device ids handed out (each daemon run reports as a new device).
    devices: AtomicU64,
}

const HEALTHY_HOOKS: &str = "[hooks]\nactivate = \"true\"\nhealth = \"test -f etc/app.conf\"\n\
                             health_timeout = \"5s\"\nhealth_retries = 0\n";
/// Fails its health check twice (one retry), so the retry's crash point is on its path.
const FAILING_HOOKS: &str = "[hooks]\nactivate = \"true\"\nhealth = \"echo unhealthy >&2; exit 1\"\n\
                             health_timeout = \"5s\"\nhealth_retries = 1\nhealth_interval = \"10ms\"\n\
                             rollback = \"true\"\n";
/// The bulk releases' hooks take a little time, so that random kills land in trials,
/// health retries and rollbacks too, not only while a slot is written.
const SLOW_HEALTHY_HOOKS: &str = "[hooks]\nactivate = \"sleep 0.05\"\nhealth = \"sleep 0.1; test -f etc/app.conf\"\n\
                                  health_timeout = \"5s\"\nhealth_retries = 0\n";
const SLOW_FAILING_HOOKS: &str = "[hooks]\nactivate = \"sleep 0.05\"\nhealth = \"sleep 0.05; exit 1\"\n\
                                  health_timeout = \"5s\"\nhealth_retries = 1\nhealth_interval = \"50ms\"\n\
                                  rollback = \"sleep 0.05\"\n";

impl World {
    fn new() -> World {
        let op = Operator::new();
        let mut mirrors = BTreeMap::new();
        let mut publish = |op: &Operator, n: u64, message: &str| {
            op.commit(message);
            let r = op.release(CHANNEL, None, &["--level", "3"]).ok();
            assert!(r.all().contains(&format!("release {n}")), "{}", r.all());
            let copy = op.dir.path().join(format!("mirror-{n}"));
            copy_dir(&op.mirror, &copy);
            mirrors.insert(n, copy);
        };

        // 1: a small healthy tree.
        op.write(&[
            ("ferry.toml", Some(HEALTHY_HOOKS)),
            ("etc/app.conf", Some("port = 8080\n")),
            ("bin/start.sh", Some("#!/bin/sh\necho start\n")),
            ("data/readme.txt", Some("hello\n")),
        ]);
        op.make_executable("bin/start.sh");
        std::os::unix::fs::symlink("etc/app.conf", op.repo.join("app.conf")).expect("symlink");
        publish(&op, 1, "one");
        // 2: healthy, a delta.
        op.write(&[
            ("etc/app.conf", Some("port = 9090\n")),
            ("data/readme.txt", None),
            ("data/new.txt", Some("new\n")),
        ]);
        publish(&op, 2, "two");
        // 3: fails its health check.
        op.write(&[("ferry.toml", Some(FAILING_HOOKS)), ("data/new.txt", Some("three\n"))]);
        publish(&op, 3, "three");
        // 4: healthy again, with bulk.
        let bulk: Vec<(String, String)> = (0..BULK_FILES)
            .map(|i| (format!("bulk/d{:02}/f{i:04}.txt", i % 30), format!("file {i}\n{}\n", "x".repeat(i % 200))))
            .collect();
        let files: Vec<(&str, Option<&str>)> = bulk.iter().map(|(p, c)| (p.as_str(), Some(c.as_str()))).collect();
        op.write(&files);
        op.write(&[("ferry.toml", Some(SLOW_HEALTHY_HOOKS))]);
        publish(&op, 4, "four");
        // 5: bulk changed, unhealthy.
        op.write(&[("ferry.toml", Some(SLOW_FAILING_HOOKS)), ("bulk/d00/f0000.txt", Some("five\n"))]);
        publish(&op, 5, "five");

        let trees = ReleaseTrees::load(&op, CHANNEL);
        let servers =
            (2..=5).map(|n| (n, Server::start(&mirrors[&n], op.dir.path().join(format!("fleet-{n}.db"))))).collect();
        let mut world = World {
            op,
            trees,
            mirrors,
            servers,
            pristine: BTreeMap::new(),
            durations: BTreeMap::new(),
            devices: AtomicU64::new(0),
        };

        let first = Device::new(CHANNEL, &world.op.root1(), "");
        first.import(&world.mirrors[&1]).ok();
        world.settle(&first, 1);
        world.pristine.insert(1, Pristine { device: first, release: 1 });
        // Each flow uninterrupted, twice: the faster run is the window for random kills
        // (the first one may pay for cold caches); the result is the next pristine state.
        for flow in [SMALL_HEALTHY, SMALL_FAILING, BIG_HEALTHY, BIG_FAILING] {
            let mut fastest = Duration::MAX;
            let mut last = None;
            for _ in 0..2 {
                let dev = world.fork(flow.from);
                let started = Instant::now();
                let r = dev.import(&world.mirrors[&flow.to]);
                fastest = fastest.min(started.elapsed());
                let expected_code = if flow.healthy { 0 } else { 1 };
                assert_eq!(r.code, expected_code, "uninterrupted import of release {}:\n{}", flow.to, r.all());
                world.settle(&dev, if flow.healthy { flow.to } else { flow.from });
                last = Some(dev);
            }
            world.durations.insert((Via::Import, flow.to), fastest);
            if let (true, Some(dev)) = (flow.healthy, last) {
                world.pristine.insert(flow.to, Pristine { device: dev, release: flow.to });
            }
        }
        // The small flows through the daemon too, for their windows.
        for flow in [SMALL_HEALTHY, SMALL_FAILING] {
            let mut fastest = Duration::MAX;
            for _ in 0..2 {
                let (dev, id) = world.daemon_device(flow);
                let started = Instant::now();
                let r = run(&mut daemon_cmd(&dev));
                fastest = fastest.min(started.elapsed());
                assert!(matches!(r.code, 0 | 1), "uninterrupted run --once of release {}:\n{}", flow.to, r.all());
                world.settle(&dev, if flow.healthy { flow.to } else { flow.from });
                let mut ledger = ReportLedger::default();
                let db = &world.servers[&flow.to].db;
                ledger.delivered(&dev.state, db, &id).unwrap_or_else(|v| panic!("fixture: reports: {v}\n{}", r.all()));
            }
            world.durations.insert((Via::Daemon, flow.to), fastest);
        }
        world
    }

    /// A new device holding a copy of the pristine state for `release`.
    fn fork(&self, release: u64) -> Device {
        let pristine = &self.pristine[&release];
        assert_eq!(pristine.release, release);
        pristine.fork(CHANNEL, &self.op.root1())
    }

    /// A new device, with a device id of its own, holding a copy of the pristine state for
    /// `flow.from`, configured to poll and report to the server of `flow.to`'s mirror.
    fn daemon_device(&self, flow: Flow) -> (Device, String) {
        let n = self.devices.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("crash-{n:05}");
        let addr = self.servers[&flow.to].process.addr;
        let config = format!(
            "mirrors = [\"http://{addr}/\"]\n[fetch]\nconnect_timeout = \"2s\"\nstall_timeout = \"2s\"\n\
             max_backoff = \"10ms\"\n[reports]\nurl = \"http://{addr}/v1/reports\"\n\
             max_outbox_bytes = 16777216\n"
        );
        let dev = Device::with_id(&id, CHANNEL, &self.op.root1(), &config);
        copy_state(&self.pristine[&flow.from].device.state, &dev);
        dev.seed_outbox(REPORT_BACKLOG, "backlog event", 9);
        (dev, id)
    }

    /// Asserts that `dev` settled on `release` (the fixture itself must be sound).
    fn settle(&self, dev: &Device, release: u64) {
        let seen = check_invariants(dev, &self.trees, Phase::Settled).unwrap_or_else(|v| panic!("fixture: {v}"));
        assert_eq!(seen.current_release(), Some(release), "fixture: {:?}", seen.journal);
    }
}

/// `ferry-agent run --once` with no proxy from the environment and no failpoints.
fn daemon_cmd(dev: &Device) -> Command {
    let mut cmd = dev.agent(&["run", "--once"]);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "FERRY_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env_remove("FAILPOINTS");
    cmd
}

/// What went wrong in one run, by kind.
#[derive(Debug)]
enum Problem {
    /// An invariant broke (after the crash or after the restart), or a report was lost or
    /// stored twice.
    Torn(String),
    /// The crash did not happen as documented, or the restart did not converge.
    Other(String),
}

/// What one run saw.
struct Outcome {
    /// Stops that landed: kills, and the slot failpoints' panics and errors (a random kill
    /// may come after the agent exited on its own).
    crashes: usize,
    /// When the first (random) kill came too late: how long the agent took to exit on its own.
    finished_first: Option<Duration>,
    line: String,
}

fn torn(when: &str, v: Violation) -> Problem {
    Problem::Torn(format!("{when}: {v}"))
}

fn describe(seen: &Observed) -> String {
    let current = match &seen.current {
        Some((slot, r)) => format!("current -> {slot} (release {})", r.release),
        None => "no current".to_owned(),
    };
    match seen.newest() {
        Some(row) => format!("{current}, journal release {} {}", row.release, row.state),
        None => current,
    }
}

/// Whether `seen` is where `flow` ends: a healthy release committed in `current`, a failing
/// one rolled back (and, with `refused`, refused) with `current` on the old release.
fn finished(flow: Flow, seen: &Observed, refused: bool) -> bool {
    let newest = seen.newest();
    if flow.healthy {
        seen.current_release() == Some(flow.to)
            && newest.is_some_and(|r| r.release == flow.to && r.state == "committed")
    } else {
        seen.current_release() == Some(flow.from)
            && newest.is_some_and(|r| r.release == flow.to && r.state == "rolled-back")
            && (!refused || seen.refused.contains(&flow.to))
    }
}

/// Checks that a crash at `point` left what [`EXPECTED`] documents.
fn check_point(point: &str, flow: Flow, after: &Observed) -> Result<(), Problem> {
    let expect = EXPECTED.iter().find(|e| e.point == point).expect("checked before");
    let ok = match expect.at {
        At::Finished => finished(flow, after, false),
        At::Before | At::Open(..) => {
            let (journal, switched) = match expect.at {
                At::Open(state, switched) => (Some(state), switched),
                _ => (None, false),
            };
            let newest = after.newest().filter(|r| r.release == flow.to).map(|r| r.state.as_str());
            let holds = if switched { flow.to } else { flow.from };
            newest == journal && after.current_release() == Some(holds)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Problem::Other(format!("crash point {point} left {}; expected {:?}", describe(after), expect.at)))
    }
}

/// One crash run: fork the pristine device, start the import (or `run --once`) and stop it
/// as each of `kills` says in turn (the second and later ones interrupt the recovery of the
/// one before), checking the invariants (and the reports) after each; then restart, check
/// again and check convergence.
fn crash_run(world: &World, via: Via, flow: Flow, kills: &[Kill<'_>]) -> Result<Outcome, Problem> {
    let (dev, device_id) = match via {
        Via::Import => (world.fork(flow.from), String::new()),
        Via::Daemon => world.daemon_device(flow),
    };
    if flow.whole {
        drop_inactive_record(&dev);
    }
    let mirror = &world.mirrors[&flow.to];
    let fleet_db = &world.servers[&flow.to].db;
    let command = || match via {
        Via::Import => {
            let mut cmd = dev.agent(&["import"]);
            cmd.arg(mirror).env_remove("FAILPOINTS");
            cmd
        }
        Via::Daemon => daemon_cmd(&dev),
    };
    let mut ledger = ReportLedger::default();
    let mut reports = |when: &str| -> Result<(), Problem> {
        if via == Via::Daemon {
            ledger.observe(&dev.state, fleet_db, &device_id).map_err(|v| torn(&format!("{when} (reports)"), v))?;
        }
        Ok(())
    };
    reports("before the run")?;

    let mut left = Vec::new();
    let mut finished_first = None;
    let mut crashes = 0;
    for (n, kill) in kills.iter().enumerate() {
        let when = if n == 0 { "after the crash".to_owned() } else { format!("after crash {} (in recovery)", n + 1) };
        let finished = interrupt(command(), *kill)?;
        if finished.is_none() {
            crashes += 1;
        }
        if n == 0 {
            finished_first = finished;
        }
        let after = check_invariants(&dev, &world.trees, Phase::AfterCrash).map_err(|v| torn(&when, v))?;
        reports(&when)?;
        if let Kill::CrashPoint(point) = kill {
            check_point(point, flow, &after)?;
        }
        // A random kill may come after the run finished on its own.
        left.push(match finished {
            None => describe(&after),
            Some(took) => format!("finished before the kill, in {took:.0?}"),
        });
    }

    // The restart, without failpoints: the same import; or `run --once` until the release
    // is settled and every report delivered.
    let mut restarts = Vec::new();
    let settled = loop {
        let restart: Run = run(&mut command());
        let settled = check_invariants(&dev, &world.trees, Phase::Settled).map_err(|v| torn("after the restart", v))?;
        reports("after the restart")?;
        restarts.push(restart);
        let restart = restarts.last().expect("one restart");
        let expected_code = match (via, flow.healthy) {
            (Via::Import, true) => restart.code == 0,
            (Via::Import, false) => restart.code == 1,
            (Via::Daemon, _) => matches!(restart.code, 0 | 1),
        };
        if !expected_code || !finished(flow, &settled, true) {
            return Err(Problem::Other(format!(
                "the restart did not converge (exit {}): {}, refused {:?}\n{}",
                restart.code,
                describe(&settled),
                settled.refused,
                restart.all()
            )));
        }
        let pending = if via == Via::Daemon {
            ferry_tests::crash::device_reports(&dev.state).map_err(|v| torn("after the restart", v))?.pending.len()
        } else {
            0
        };
        if pending == 0 {
            break settled;
        }
        if restarts.len() >= MAX_DAEMON_RESTARTS {
            let logs: Vec<String> = restarts.iter().map(Run::all).collect();
            return Err(Problem::Other(format!(
                "{pending} reports still pending after {} restarts:\n{}",
                restarts.len(),
                logs.join("\n---\n")
            )));
        }
    };
    let mut line = format!("left {}; restart: {}", left.join("; then "), describe(&settled));
    if via == Via::Daemon {
        let stored = ledger
            .delivered(&dev.state, fleet_db, &device_id)
            .map_err(|v| torn("after the final upload (reports)", v))?;
        line.push_str(&format!(", {stored} reports delivered once each"));
    }
    Ok(Outcome { crashes, finished_first, line })
}

/// Removes the record of the slot `current` does not point at, as a failed trial does.
fn drop_inactive_record(dev: &Device) {
    let current = std::fs::read_link(dev.state.join("current")).expect("current link");
    let inactive = if current == Path::new("slots/a") { "b" } else { "a" };
    let record = dev.state.join("slots").join(inactive).join(".ferry-slot");
    std::fs::remove_file(&record).unwrap_or_else(|e| panic!("removing {}: {e}", record.display()));
}

/// Runs `cmd` and stops it as `kill` says. `None` when it was stopped; how long it ran when
/// a random kill came after it had exited on its own.
fn interrupt(mut cmd: Command, kill: Kill<'_>) -> Result<Option<Duration>, Problem> {
    let output = |out: &Output| {
        format!("stdout:\n{}stderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let (point, action) = match kill {
        Kill::CrashPoint(point) | Kill::Error(point) => (point, "return"),
        Kill::Panic(point) => (point, "panic"),
        Kill::After(delay) => {
            let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starting ferry-agent");
            let started = Instant::now();
            // Poll rather than sleep, to learn when a run that beats the kill ended.
            let mut exited = None;
            loop {
                if child.try_wait().expect("polling ferry-agent").is_some() {
                    exited = Some(started.elapsed());
                    break;
                }
                let left = delay.saturating_sub(started.elapsed());
                if left.is_zero() {
                    child.kill().expect("SIGKILL");
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(1)));
            }
            let out = child.wait_with_output().expect("waiting for ferry-agent");
            return match out.status.signal() {
                Some(9) => Ok(None),
                None => Ok(Some(exited.unwrap_or(delay))),
                Some(other) => Err(Problem::Other(format!("died by signal {other}:\n{}", output(&out)))),
            };
        }
    };
    let out = cmd.env("FAILPOINTS", format!("{point}={action}")).output().expect("running ferry-agent");
    let (stopped, expected) = match kill {
        Kill::CrashPoint(_) => (out.status.signal() == Some(9), "to die by SIGKILL"),
        Kill::Panic(_) => (out.status.code() == Some(101), "to panic (exit 101)"),
        _ => (out.status.code() == Some(1) && output(&out).contains(point), "to fail naming the failpoint"),
    };
    if !stopped {
        return Err(Problem::Other(format!(
            "expected {point}={action} {expected}, got {}:\n{}",
            out.status,
            output(&out)
        )));
    }
    Ok(None)
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}"))
        }
        Err(_) => default,
    }
}

#[derive(Default)]
struct Tally {
    runs: usize,
    /// Kills that landed, by kind of run.
    crashes: BTreeMap<&'static str, usize>,
    torn: Vec<String>,
    other: Vec<String>,
}

impl Tally {
    /// Runs and records one crash run of kind `kind`; returns [`Outcome::finished_first`].
    fn record(
        &mut self,
        kind: &'static str,
        label: &str,
        run: impl FnOnce() -> Result<Outcome, Problem>,
    ) -> Option<Duration> {
        let started = Instant::now();
        let result = run();
        self.report(kind, label, started, result)
    }

    /// Records the `result` of a crash run started at `started`; returns
    /// [`Outcome::finished_first`].
    fn report(
        &mut self,
        kind: &'static str,
        label: &str,
        started: Instant,
        result: Result<Outcome, Problem>,
    ) -> Option<Duration> {
        self.runs += 1;
        let label = format!("{label} [{:.1?}]", started.elapsed());
        match result {
            Ok(outcome) => {
                println!("  ok    {label}: {}", outcome.line);
                *self.crashes.entry(kind).or_default() += outcome.crashes;
                outcome.finished_first
            }
            Err(Problem::Torn(m)) => {
                println!("  TORN  {label}: {m}");
                self.torn.push(format!("{label}: {m}"));
                None
            }
            Err(Problem::Other(m)) => {
                println!("  FAIL  {label}: {m}");
                self.other.push(format!("{label}: {m}"));
                None
            }
        }
    }

    fn crashes(&self) -> usize {
        self.crashes.values().sum()
    }
}

#[test]
fn kill_9_at_every_crash_point_and_at_random_instants_leaves_one_whole_tree() {
    let started = Instant::now();
    let points = crash_points();
    let in_source = crash_points_in_source();
    let unlisted: Vec<&String> = in_source.iter().filter(|p| !points.contains(p)).collect();
    assert!(unlisted.is_empty(), "crash_point!s in the agent missing from CRASH_POINTS: {unlisted:?}");
    let unused: Vec<&String> = points.iter().filter(|p| !in_source.contains(p)).collect();
    assert!(unused.is_empty(), "CRASH_POINTS names points no crash_point! in the agent marks: {unused:?}");
    let missing: Vec<&String> = points.iter().filter(|p| !EXPECTED.iter().any(|e| e.point == p.as_str())).collect();
    assert!(missing.is_empty(), "crash points in agent/src/crash.rs with no entry in EXPECTED here: {missing:?}");
    let stale: Vec<&str> = EXPECTED.iter().map(|e| e.point).filter(|e| !points.iter().any(|p| p == e)).collect();
    assert!(stale.is_empty(), "EXPECTED names crash points the agent no longer has: {stale:?}");
    let slot_points = slot_failpoints();
    assert!(!slot_points.is_empty(), "no fail_point! found in agent/src/slots.rs");

    let world = World::new();
    println!(
        "fixture ready in {:.1?}; uninterrupted runs: {:?}",
        started.elapsed(),
        world.durations.iter().map(|((via, n), d)| format!("{via:?} release {n} {d:.0?}")).collect::<Vec<_>>()
    );
    let mut tally = Tally::default();

    // Every crash point, on the healthy path and on the failing one, through the command
    // that passes it.
    let mut named_runs = 0;
    for expect in EXPECTED {
        let flows: &[Flow] = match expect.paths {
            Paths::Both => &[SMALL_HEALTHY, SMALL_FAILING],
            Paths::Healthy => &[SMALL_HEALTHY],
            Paths::Failing => &[SMALL_FAILING],
            Paths::Whole => &[SMALL_HEALTHY, SMALL_FAILING_WHOLE],
            Paths::InPlace => &[SMALL_FAILING],
        };
        for flow in flows {
            let whole = if flow.whole { ", whole" } else { "" };
            let label = format!("{} ({:?} {} -> {}{whole})", expect.point, expect.via, flow.from, flow.to);
            tally.record("named", &label, || crash_run(&world, expect.via, *flow, &[Kill::CrashPoint(expect.point)]));
            named_runs += 1;
        }
    }

    // Each slot failpoint, as a panic and as an injected I/O error. All of them are on the
    // failing path from release 2 with slot A's record dropped, where slot A (release 1) is
    // emptied and both switches happen. (Not kills: counted apart.)
    let mut slot_runs = 0;
    for point in &slot_points {
        for (action, kill) in [("panic", Kill::Panic(point)), ("return", Kill::Error(point))] {
            let label = format!("{point}={action} ({} -> {}, whole)", SMALL_FAILING.from, SMALL_FAILING.to);
            tally.record("slot", &label, || crash_run(&world, Via::Import, SMALL_FAILING_WHOLE, &[kill]));
            slot_runs += 1;
        }
    }

    // Random instants, over the runs of RANDOM_MIX in turn; every other block of six is
    // killed twice (the second kill lands in the recovery) before the final restart. An
    // instant is a seeded fraction of KILL_SPAN times the run's window: its fastest
    // uninterrupted run at first, then the duration of the latest run that beat its kill, so
    // the window follows the machine's load and some kills always land near the end of a
    // run. The fractions are drawn up front, so FERRY_CRASH_JOBS does not change them.
    let random = env_u64("FERRY_CRASH_RANDOM", DEFAULT_RANDOM) as usize;
    let seed = env_u64("FERRY_CRASH_SEED", DEFAULT_SEED);
    let jobs = env_u64("FERRY_CRASH_JOBS", 1).max(1);
    let mut rng = SplitMix64::new(seed);
    let plan: Vec<(Via, Flow, Vec<f64>)> = (0..random)
        .map(|i| {
            let (via, flow) = RANDOM_MIX[i % RANDOM_MIX.len()];
            let kills = if (i / 6).is_multiple_of(2) { 1 } else { 2 };
            (via, flow, (0..kills).map(|_| KILL_SPAN * rng.fraction()).collect())
        })
        .collect();
    let windows = Mutex::new(world.durations.clone());
    let finished_first = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let shared = Mutex::new(tally);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((via, flow, fractions)) = plan.get(i) else { break };
                let window = windows.lock().unwrap_or_else(PoisonError::into_inner)[&(*via, flow.to)];
                let kills: Vec<Duration> = fractions.iter().map(|f| window.mul_f64(*f)).collect();
                let at: Vec<String> = kills.iter().map(|d| format!("{d:.0?}")).collect();
                let label = format!(
                    "random #{i} {via:?} at {} of {window:.0?} ({} -> {})",
                    at.join(" then "),
                    flow.from,
                    flow.to
                );
                let kills: Vec<Kill<'_>> = kills.into_iter().map(Kill::After).collect();
                let started = Instant::now();
                let result = crash_run(&world, *via, *flow, &kills);
                if let Some(took) =
                    shared.lock().unwrap_or_else(PoisonError::into_inner).report("random", &label, started, result)
                {
                    finished_first.fetch_add(1, Ordering::Relaxed);
                    windows.lock().unwrap_or_else(PoisonError::into_inner).insert((*via, flow.to), took);
                }
            });
        }
    });
    let tally = shared.into_inner().unwrap_or_else(PoisonError::into_inner);
    let finished_first = finished_first.into_inner();

    let crashes = |kind: &str| tally.crashes.get(kind).copied().unwrap_or(0);
    println!(
        "crash soak: {} crash points ({} named kills at {} points in {named_runs} runs, {} slot failpoint stops \
         in {slot_runs} runs, {} random kills in {random} runs, {finished_first} of which finished first), \
         torn states: {}, other failures: {} [seed {seed:#x}, {jobs} job(s), {:.1?}]",
        tally.crashes(),
        crashes("named"),
        points.len(),
        crashes("slot"),
        crashes("random"),
        tally.torn.len(),
        tally.other.len(),
        started.elapsed()
    );
    assert!(tally.torn.is_empty(), "torn states:\n{}", tally.torn.join("\n"));
    assert!(tally.other.is_empty(), "failures:\n{}", tally.other.join("\n"));
}

/// Regression: a kill during the pack import, after gix renamed the new pack into place but
/// before the import's checks removed its `.keep` mark, left the marked pack for ever — the
/// restart's re-import found the pack present and wrote nothing. Staged here exactly: the
/// next release's pack and index copied in with a `.keep`, plus a gix temporary.
#[test]
fn restart_removes_a_pack_whose_import_was_interrupted() {
    let op = Operator::new();
    op.write(&[("etc/app.conf", Some("port = 1\n")), ("ferry.toml", Some(HEALTHY_HOOKS))]);
    op.commit("one");
    op.release(CHANNEL, None, &["--level", "3"]).ok();
    let mirror1 = op.dir.path().join("mirror-1");
    copy_dir(&op.mirror, &mirror1);
    op.write(&[("etc/app.conf", Some("port = 2\n"))]);
    op.commit("two");
    op.release(CHANNEL, None, &["--level", "3"]).ok();
    let trees = ReleaseTrees::load(&op, CHANNEL);

    let dev = Device::new(CHANNEL, &op.root1(), "");
    dev.import(&mirror1).ok();
    let pristine = Pristine { device: dev, release: 1 };
    // Where release 2's pack lands: the files a finished import adds.
    let finished = pristine.fork(CHANNEL, &op.root1());
    finished.import(&op.mirror).ok();
    let packs = |dev: &Device| -> Vec<String> {
        let dir = dev.state.join("objects").join("pack");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("objects/pack")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = packs(&pristine.device);
    let added: Vec<String> = packs(&finished).into_iter().filter(|n| !before.contains(n)).collect();
    let idx = added.iter().find(|n| n.ends_with(".idx")).unwrap_or_else(|| panic!("no new pack in {added:?}"));

    let dev = pristine.fork(CHANNEL, &op.root1());
    let (from, to) = (finished.state.join("objects/pack"), dev.state.join("objects/pack"));
    for name in &added {
        std::fs::copy(from.join(name), to.join(name)).expect("copying the pack");
    }
    std::fs::write(to.join(idx.replace(".idx", ".keep")), b"").expect("keep");
    std::fs::write(to.join(".tmp-pack-interrupted"), b"half a pack").expect("tmp");
    check_invariants(&dev, &trees, Phase::AfterCrash).unwrap_or_else(|v| panic!("staged state: {v}"));

    dev.import(&op.mirror).ok();
    let seen = check_invariants(&dev, &trees, Phase::Settled).unwrap_or_else(|v| panic!("after the restart: {v}"));
    assert_eq!(seen.current_release(), Some(2));
    assert_eq!(packs(&dev), packs(&finished), "the pack is imported afresh, unmarked");
}
