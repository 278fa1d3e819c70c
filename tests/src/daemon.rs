//! Helpers for the daemon's end-to-end tests (`tests/tests/daemon.rs`): an operator whose
//! release is made of pseudo-random files (so zstd cannot shrink the payload and transfers
//! take real bytes), devices configured against one or more mirrors with short fetch
//! timeouts, `ferry-agent run --once` and `ferry-agent run` driven as processes, and
//! read-only views of what the device holds (status, journal, the SQLite payload table).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::fixture::{Device, Operator};
use crate::{run, trees, Run};

/// Fetch settings that keep failing runs short: a stalled transfer is cut after 1 s and no
/// retry waits more than 1 s.
pub const FAST_FETCH: &str = "[fetch]\nconnect_timeout = \"2s\"\nstall_timeout = \"1s\"\nmax_backoff = \"1s\"\n";

/// An operator with one published release of pseudo-random files, and what a device that
/// applied it must hold.
pub struct World {
    /// The operator (repo, keys, mirror).
    pub op: Operator,
    /// The channel released to.
    pub channel: String,
    /// `git archive` of each release's tree, by release number (index 0 is release 1).
    pub expected: Vec<PathBuf>,
}

impl World {
    /// Release 1 of `channel`: `files` random files of `bytes_each` bytes plus a small text file.
    pub fn new(channel: &str, files: usize, bytes_each: usize) -> World {
        let op = Operator::new();
        let mut w = World { op, channel: channel.to_string(), expected: Vec::new() };
        w.write_random("data", files, bytes_each, 1);
        w.publish("one", &[]);
        w
    }

    /// Writes `files` random files of `bytes_each` bytes under `dir` of the repo.
    pub fn write_random(&self, dir: &str, files: usize, bytes_each: usize, seed: u64) {
        let base = self.op.repo.join(dir);
        fs::create_dir_all(&base).expect("mkdir");
        for i in 0..files {
            let bytes = pseudo_random(bytes_each, seed.wrapping_mul(1000).wrapping_add(i as u64));
            fs::write(base.join(format!("blob-{i}.bin")), bytes).expect("write");
        }
        self.op.write(&[("README.txt", Some(&format!("release made with seed {seed}\n")))]);
    }

    /// Commits the working tree and releases it with `extra` arguments; records its tree.
    pub fn publish(&mut self, message: &str, extra: &[&str]) {
        self.publish_at(message, extra, None);
    }

    /// [`World::publish`] with the bundler's clock set to `epoch` (`SOURCE_DATE_EPOCH`),
    /// so documents carry that creation time.
    pub fn publish_at(&mut self, message: &str, extra: &[&str], epoch: Option<u64>) {
        self.op.commit(message);
        let mut c = self.op.bundler(&["release", "--repo"]);
        c.arg(&self.op.repo).args(["--ref", "HEAD", "--channel", &self.channel, "--mirror"]).arg(&self.op.mirror);
        c.arg("--release-key").arg(self.op.key("release")).arg("--index-key").arg(self.op.key("index"));
        c.args(extra);
        if let Some(t) = epoch {
            c.env("SOURCE_DATE_EPOCH", t.to_string());
        }
        run(&mut c).ok();
        let dest = self.op.dir.path().join(format!("expected-{}", self.expected.len() + 1));
        trees::git_archive(&self.op.repo, "HEAD", None, &dest);
        self.expected.push(dest);
    }

    /// The latest release's full payload: its mirror path (`payloads/<sha>.ferry`), the
    /// signed payload size and the file's length.
    pub fn full_payload(&self) -> Payload {
        let index = self.op.inspect(&self.index_path());
        let digest = index["document"]["latest"]["manifest_sha256"].as_str().expect("manifest digest").to_string();
        let manifest = self.op.inspect(&self.op.mirror.join("releases").join(format!("{digest}.manifest")));
        let full = manifest["document"]["payloads"]
            .as_array()
            .expect("payloads")
            .iter()
            .find(|p| p["kind"] == "full")
            .expect("a full payload")
            .clone();
        let rel = format!("payloads/{}.ferry", full["sha256"].as_str().expect("sha256"));
        let file_len = fs::metadata(self.op.mirror.join(&rel)).expect("payload file").len();
        Payload { rel, size: full["size"].as_u64().expect("size"), file_len }
    }

    /// `bundler index refresh` of the channel: the next index version, valid for `expires`
    /// from `epoch` (`SOURCE_DATE_EPOCH`) or from now.
    pub fn refresh_index(&self, expires: &str, epoch: Option<u64>) {
        let mut c = self.op.bundler(&["index", "refresh", "--mirror"]);
        c.arg(&self.op.mirror).args(["--channel", &self.channel, "--index-key"]).arg(self.op.key("index"));
        c.args(["--expires", expires]);
        if let Some(t) = epoch {
            c.env("SOURCE_DATE_EPOCH", t.to_string());
        }
        run(&mut c).ok();
    }

    /// `mirror/channels/<channel>/index`.
    pub fn index_path(&self) -> PathBuf {
        self.op.mirror.join("channels").join(&self.channel).join("index")
    }

    /// The index's path relative to the mirror.
    pub fn index_rel(&self) -> String {
        format!("channels/{}/index", self.channel)
    }

    /// A device on this world's channel with `mirrors` and extra TOML (tables last).
    pub fn device(&self, mirrors: &[String], extra: &str) -> Device {
        let list = mirrors.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ");
        Device::new(&self.channel, &self.op.root1(), &format!("mirrors = [{list}]\n{extra}"))
    }

    /// Writes a copy of the channel index with one signed byte flipped at `rel` in the
    /// mirror: a document a mirror could serve that no index key signed.
    pub fn tampered_index(&self, rel: &str) {
        let mut bytes = fs::read(self.index_path()).expect("index");
        // Format, kind and the length prefix take the first few bytes; 10 is in the payload.
        bytes[10] ^= 0x01;
        let dest = self.op.mirror.join(rel);
        fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        fs::write(dest, bytes).expect("write");
    }

    /// Copies the whole mirror to `dest` (to serve a stale snapshot of it later).
    pub fn snapshot_mirror(&self, dest: &Path) {
        let status = Command::new("cp").arg("-a").arg(&self.op.mirror).arg(dest).status().expect("cp");
        assert!(status.success(), "cp -a mirror: {status}");
    }
}

/// A published payload.
#[derive(Debug, Clone)]
pub struct Payload {
    /// `payloads/<sha256>.ferry`.
    pub rel: String,
    /// The signed payload size.
    pub size: u64,
    /// The `.ferry` file's length (header included).
    pub file_len: u64,
}

/// Deterministic bytes that do not compress (splitmix64).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x5EED_F00D;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One `ferry-agent run --once`: its output and how long it took.
#[derive(Debug)]
pub struct Once {
    /// Exit code and output.
    pub run: Run,
    /// Wall time.
    pub elapsed: Duration,
}

impl Once {
    /// The line `--once` prints when it did not converge.
    pub fn not_converged_line(&self) -> Option<&str> {
        self.run.stdout.lines().find(|l| l.starts_with("not converged: "))
    }
}

/// Runs `ferry-agent run --once` with extra environment (e.g. `FERRY_FAKE_NOW`).
pub fn run_once(dev: &Device, env: &[(&str, String)]) -> Once {
    let mut cmd = dev.agent(&["run", "--once"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let r = run(&mut cmd);
    Once { run: r, elapsed: start.elapsed() }
}

/// Runs `run --once` until it exits 0, at most `max` times; panics with every output if it
/// never does. Returns the runs made.
#[track_caller]
pub fn run_until_converged(dev: &Device, max: usize) -> Vec<Once> {
    let mut runs = Vec::new();
    for _ in 0..max {
        let once = run_once(dev, &[]);
        let done = once.run.code == 0;
        runs.push(once);
        if done {
            return runs;
        }
    }
    let outputs: Vec<String> = runs.iter().map(|o| format!("exit {}:\n{}", o.run.code, o.run.all())).collect();
    panic!("not converged after {max} runs:\n{}", outputs.join("\n---\n"));
}

/// Asserts that `once` exited 1 and printed `not converged: <reason>: …`, and that the
/// device's status names `reason` as the last error. Returns the printed line.
#[track_caller]
pub fn assert_rejected(dev: &Device, once: &Once, reason: &str) -> String {
    assert_eq!(once.run.code, 1, "expected exit 1 ({reason}):\n{}", once.run.all());
    let line = once.not_converged_line().unwrap_or_else(|| panic!("no `not converged` line:\n{}", once.run.all()));
    assert!(line.starts_with(&format!("not converged: {reason}: ")), "expected reason {reason}: {line}");
    assert_eq!(last_error_reason(dev).as_deref(), Some(reason), "status last_error after: {line}");
    line.to_string()
}

/// Asserts that the device runs `release` from `slot`, its tree equal to `expected`.
#[track_caller]
pub fn assert_applied(dev: &Device, release: u64, slot: &str, expected: &Path) {
    let status = dev.status();
    assert_eq!(status["applied"]["release"].as_u64(), Some(release), "status: {status:#}");
    assert_eq!(status["trial"], "none", "status: {status:#}");
    assert_eq!(dev.current_target().as_deref(), Some(format!("slots/{slot}").as_str()));
    trees::assert_same(expected, &dev.current());
}

/// Asserts that nothing was ever applied: no release, no `current`, no journal entry.
#[track_caller]
pub fn assert_nothing_applied(dev: &Device) {
    let status = dev.status();
    assert!(status["applied"].is_null(), "a release was applied: {status:#}");
    assert_eq!(dev.current_target(), None, "current exists");
    assert!(journal(dev).is_empty(), "journal: {:?}", journal(dev));
}

/// `status --json`'s `last_error.reason`.
pub fn last_error_reason(dev: &Device) -> Option<String> {
    dev.status()["last_error"]["reason"].as_str().map(str::to_owned)
}

/// The apply journal, newest first: (release, state).
pub fn journal(dev: &Device) -> Vec<(u64, String)> {
    let r = run(&mut dev.agent(&["history", "--json", "-n", "100"])).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("history json");
    v["applies"]
        .as_array()
        .expect("applies")
        .iter()
        .map(|a| (a["release"].as_u64().expect("release"), a["state"].as_str().expect("state").to_string()))
        .collect()
}

/// The store's payload rows: (digest, stored bytes, verified), read-only. Empty before
/// the database exists.
pub fn payload_rows(dev: &Device) -> Vec<(String, u64, bool)> {
    let db = dev.state.join("ferry.db");
    if !db.exists() {
        return Vec::new();
    }
    let Ok(conn) = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY) else { return Vec::new() };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let Ok(mut stmt) = conn.prepare("SELECT digest, stored, verified FROM payloads") else { return Vec::new() };
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, bool>(2)?)));
    match rows {
        Ok(rows) => rows.filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

/// The `.prom` metrics file as (name, value) pairs.
pub fn metrics(path: &Path) -> Vec<(String, u64)> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("metrics file {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let name = name.split('{').next()?.to_string();
            Some((name, value.parse().ok()?))
        })
        .collect()
}

/// A metric's value from [`metrics`].
pub fn metric(all: &[(String, u64)], name: &str) -> Option<u64> {
    all.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// `ferry-agent run` in the background, its log in `<device>/daemon.log`. Killed
/// (SIGKILL) on drop unless [`Daemon::stop`] or [`Daemon::kill`] was called.
pub struct Daemon {
    child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `ferry-agent run` for `dev`.
    pub fn start(dev: &Device) -> Daemon {
        let log = dev.dir.path().join("daemon.log");
        let file = fs::OpenOptions::new().create(true).append(true).open(&log).expect("daemon log");
        let child = dev
            .agent(&["run"])
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawning ferry-agent run");
        Daemon { child: Some(child), log }
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (at most 20 s, then SIGKILL); returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let status = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().expect("kill -TERM");
        assert!(status.success(), "kill -TERM {}", c.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
