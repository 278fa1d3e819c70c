//! Helpers for driving `ferry-agent run` as a long-running service from tests and
//! benchmarks: a spawned daemon whose stderr is collected while it runs ([`Daemon`]), a
//! fake systemd notification socket ([`NotifySocket`]), signals sent with `kill(1)` (the
//! tests crate has no `unsafe` and no libc), incompressible releases from a seed
//! ([`publish_random_release`]) and the payload table of `ferry.db` read without writing
//! ([`payload_rows`]).
//!
//! Everything is bounded: every wait takes a timeout, and dropping a [`Daemon`] that still
//! runs kills it (SIGKILL) and reaps it.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::fixture::{Device, Operator};

/// Environment variables a service manager sets; removed from every daemon the tests start
/// (the test runner itself may run under systemd) unless the test sets them.
const MANAGER_ENV: &[&str] =
    &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "FERRY_LOG", "INVOCATION_ID", "NO_COLOR"];

/// Polls `f` every 20 ms until it returns `Some`, at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends signal `name` (`TERM`, `HUP`, …) to `pid` with `kill(1)`.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("running kill -s {name} {pid}: {e}"));
    assert!(status.success(), "kill -s {name} {pid}: {status}");
}

/// A running `ferry-agent run` (or any agent command) with its stderr collected.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `ferry-agent run` for `dev` with `env` on top of a clean environment.
    pub fn start(dev: &Device, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(dev.agent(&["run"]), env)
    }

    /// Starts `cmd` (an agent command) with `env` on top of a clean environment.
    pub fn spawn(mut cmd: Command, env: &[(&str, &str)]) -> Daemon {
        for k in MANAGER_ENV {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap_or_else(PoisonError::into_inner);
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon { child, log, reader: Some(reader), status: None }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `name` (`TERM`, `HUP`, `INT`).
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until stderr contains `needle`, at most `timeout`; whether it did.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.log().contains(needle).then_some(())).is_some()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap_or_else(|e| panic!("waiting for the agent: {e}"));
        }
        self.status
    }

    /// Waits for the process to end, at most `timeout`; then waits for its stderr to close.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_for(timeout, || self.exited())?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Some(status)
    }

    /// SIGTERM, then waits up to `timeout`; panics (with the log) if it does not exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(timeout)
            .unwrap_or_else(|| panic!("the agent did not exit within {timeout:?} of SIGTERM:\n{}", self.log()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A fake `$NOTIFY_SOCKET`: a datagram socket in a temporary directory whose messages are
/// collected, with their arrival times, by a background thread.
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifySocket {
    /// Binds a fresh socket.
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).expect("binding the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (m, d) = (Arc::clone(&messages), Arc::clone(&done));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !d.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m.lock().unwrap_or_else(PoisonError::into_inner).push((Instant::now(), text));
                }
            }
        });
        NotifySocket { _dir: dir, path, messages, done, thread: Some(thread) }
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every message so far with its arrival time.
    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The messages so far, without times and without `WATCHDOG=1`.
    pub fn texts(&self) -> Vec<String> {
        self.messages().into_iter().map(|(_, m)| m).filter(|m| m != "WATCHDOG=1").collect()
    }

    /// Waits for a message, at index `from` or later, that satisfies `pred`; returns its
    /// index and time.
    pub fn wait(&self, from: usize, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<(usize, Instant)> {
        wait_for(timeout, || {
            let m = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
            m.iter().enumerate().skip(from).find(|(_, (_, text))| pred(text)).map(|(i, (t, _))| (i, *t))
        })
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `len` pseudo-random (incompressible) bytes from `seed` (SplitMix64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ 0x6a09_e667_f3bc_c909;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Commits `total` bytes of random content (files of at most 1 MiB under `blob/`, replacing
/// any there) plus `release.txt = label`, and publishes it on `channel` as a full payload
/// only, at zstd level 1 (random bytes do not compress; level 19 would only cost time).
pub fn publish_random_release(op: &Operator, channel: &str, total: usize, seed: u64, label: &str) {
    let blob = op.repo.join("blob");
    let _ = std::fs::remove_dir_all(&blob);
    std::fs::create_dir_all(&blob).expect("mkdir blob");
    let data = random_bytes(seed, total);
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        std::fs::write(blob.join(format!("{i:04}.bin")), piece).expect("write blob");
    }
    op.write(&[("release.txt", Some(label))]);
    op.commit(label);
    op.release(channel, None, &["--deltas", "0", "--level", "1"]).ok();
}

/// One row of `ferry.db`'s `payloads` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRow {
    /// SHA-256 of the payload (hex).
    pub digest: String,
    /// Signed size.
    pub size: u64,
    /// Bytes committed so far.
    pub stored: u64,
    /// Whether the stored bytes were verified.
    pub verified: bool,
}

/// The `payloads` table of the device's `ferry.db`, opened read-only; empty when the
/// database does not exist yet or cannot be read right now.
pub fn payload_rows(state: &Path) -> Vec<PayloadRow> {
    let path = state.join("ferry.db");
    if !path.exists() {
        return Vec::new();
    }
    let read = || -> rusqlite::Result<Vec<PayloadRow>> {
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(2))?;
        let mut stmt = conn.prepare("SELECT digest, size, stored, verified FROM payloads ORDER BY digest")?;
        let rows = stmt.query_map([], |r| {
            Ok(PayloadRow {
                digest: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                stored: r.get::<_, i64>(2)? as u64,
                verified: r.get(3)?,
            })
        })?;
        rows.collect()
    };
    read().unwrap_or_default()
}
