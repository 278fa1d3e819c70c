//! Running a hook command: a clean environment and its own process group, its output logged
//! line by line with the tail kept, a timeout that kills the whole group, and health retries.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{HookCommand, HookError, HookKind, HookSpec, OUTPUT_TAIL_BYTES};

/// Longest output line logged as is; the rest of the line is cut.
const MAX_LOGGED_LINE: usize = 1024;
/// How often a running hook is checked for exit or timeout.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the output of an exited hook is waited for, when a leftover background
/// process still holds the pipe open.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// `PATH` for hooks when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Variables passed from the agent's environment to hooks.
const PASSED_THROUGH_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME"];

/// What a hook is told about the release it runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEnv {
    /// `FERRY_RELEASE`
    pub release: u64,
    /// `FERRY_COMMIT`: the snapshot commit.
    pub commit: String,
    /// `FERRY_SLOT`: `a` or `b`.
    pub slot: String,
    /// `FERRY_PREVIOUS_SLOT`: empty when none.
    pub previous_slot: Option<String>,
    /// `FERRY_SLOT_PATH`, and the working directory.
    pub slot_path: PathBuf,
    /// `FERRY_CHANNEL`
    pub channel: String,
}

/// The agent's caps on what a release's `ferry.toml` may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookLimits {
    /// Longest any one command (or health attempt, or pause between attempts) may take.
    pub max_timeout: Duration,
    /// Most health retries honoured.
    pub max_health_retries: u32,
}

impl Default for HookLimits {
    fn default() -> Self {
        HookLimits { max_timeout: Duration::from_secs(600), max_health_retries: 20 }
    }
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0, or no such hook configured.
    Ok,
    /// Non-zero exit, killed by a signal, or could not be started.
    Failed {
        /// E.g. `exit status: 3`, `signal: 9 (SIGKILL)`, `could not start ...`.
        status: String,
        /// The last [`OUTPUT_TAIL_BYTES`] of stdout and stderr, interleaved.
        output_tail: String,
    },
    /// Still running at the timeout; its process group was killed.
    TimedOut {
        /// The timeout that applied.
        after: Duration,
        /// The last [`OUTPUT_TAIL_BYTES`] of stdout and stderr, interleaved.
        output_tail: String,
    },
}

impl HookOutcome {
    /// Whether the hook succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, HookOutcome::Ok)
    }
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookOutcome::Ok => f.write_str("succeeded"),
            HookOutcome::Failed { status, .. } => write!(f, "failed ({status})"),
            HookOutcome::TimedOut { after, .. } => {
                write!(f, "timed out after {}", humantime::format_duration(*after))
            }
        }
    }
}

/// Runs the activate hook, if any, within its timeout.
pub fn run_activate(spec: &HookSpec, env: &HookEnv, limits: &HookLimits) -> Result<HookOutcome, HookError> {
    let Some(command) = spec.activate() else {
        tracing::debug!(release = env.release, slot = %env.slot, "no activate hook");
        return Ok(HookOutcome::Ok);
    };
    let timeout = capped(HookKind::Activate, spec.activate_timeout(), limits);
    run_once(HookKind::Activate, command, timeout, env, 1)
}

/// Runs the health hook, if any: up to `1 + health_retries` attempts, each within
/// `health_timeout`, `health_interval` apart; `Ok` on the first success, otherwise the
/// last attempt's outcome. No health hook counts as healthy.
pub fn run_health(spec: &HookSpec, env: &HookEnv, limits: &HookLimits) -> Result<HookOutcome, HookError> {
    let Some(command) = spec.health() else {
        tracing::info!(release = env.release, slot = %env.slot, "no health hook; counting the release healthy");
        return Ok(HookOutcome::Ok);
    };
    let timeout = capped(HookKind::Health, spec.health_timeout(), limits);
    let interval = spec.health_interval().min(limits.max_timeout);
    let attempts = spec.health_retries().min(limits.max_health_retries).saturating_add(1);
    let mut attempt = 1;
    loop {
        let outcome = run_once(HookKind::Health, command, timeout, env, attempt)?;
        if outcome.is_ok() || attempt >= attempts {
            return Ok(outcome);
        }
        tracing::warn!(release = env.release, slot = %env.slot, attempt, attempts, %outcome,
            "health check failed; retrying");
        crate::crash_point!("hooks::health-retry");
        thread::sleep(interval);
        attempt += 1;
    }
}

/// Runs the rollback hook, if any, within its timeout.
pub fn run_rollback(spec: &HookSpec, env: &HookEnv, limits: &HookLimits) -> Result<HookOutcome, HookError> {
    let Some(command) = spec.rollback() else {
        tracing::debug!(release = env.release, slot = %env.slot, "no rollback hook");
        return Ok(HookOutcome::Ok);
    };
    let timeout = capped(HookKind::Rollback, spec.rollback_timeout(), limits);
    run_once(HookKind::Rollback, command, timeout, env, 1)
}

fn capped(hook: HookKind, timeout: Duration, limits: &HookLimits) -> Duration {
    if timeout > limits.max_timeout {
        tracing::warn!(%hook, asked = %humantime::format_duration(timeout),
            max = %humantime::format_duration(limits.max_timeout), "hook timeout capped");
        limits.max_timeout
    } else {
        timeout
    }
}

/// Runs one command to completion or timeout.
fn run_once(
    hook: HookKind,
    command: &HookCommand,
    timeout: Duration,
    env: &HookEnv,
    attempt: u32,
) -> Result<HookOutcome, HookError> {
    // The command runs *in* the slot, so the slot path it is given (and a relative program
    // resolved against it) must not be relative to the agent's own working directory, as
    // it is under `--config dir/agent.toml` with a relative `state_dir`.
    let slot_path = std::path::absolute(&env.slot_path).map_err(|source| HookError::Io { hook, source })?;
    let (program, args) = command.program_and_args(&slot_path);
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .current_dir(&slot_path)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    for name in PASSED_THROUGH_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.env("FERRY_RELEASE", env.release.to_string())
        .env("FERRY_COMMIT", &env.commit)
        .env("FERRY_SLOT", &env.slot)
        .env("FERRY_PREVIOUS_SLOT", env.previous_slot.as_deref().unwrap_or(""))
        .env("FERRY_SLOT_PATH", &slot_path)
        .env("FERRY_CHANNEL", &env.channel)
        .env("FERRY_HOOK", hook.as_str())
        .env("FERRY_ATTEMPT", attempt.to_string());

    tracing::info!(%hook, release = env.release, slot = %env.slot, attempt, %command, "running hook");
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let status = format!("could not start {}: {e}", program.display());
            tracing::warn!(%hook, release = env.release, slot = %env.slot, %status, "hook failed");
            return Ok(HookOutcome::Failed { status, output_tail: String::new() });
        }
    };
    let output = match Output::capture(hook, &mut child) {
        Ok(output) => output,
        Err(source) => {
            kill_and_reap(&mut child);
            return Err(HookError::Io { hook, source });
        }
    };

    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(source) => {
                kill_and_reap(&mut child);
                return Err(HookError::Io { hook, source });
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break None;
        }
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    };

    let outcome = match status {
        Some(status) => {
            let output_tail = output.finish();
            if status.success() {
                HookOutcome::Ok
            } else {
                HookOutcome::Failed { status: status.to_string(), output_tail }
            }
        }
        None => {
            kill_and_reap(&mut child);
            HookOutcome::TimedOut { after: timeout, output_tail: output.finish() }
        }
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if outcome.is_ok() {
        tracing::info!(%hook, release = env.release, slot = %env.slot, attempt, elapsed_ms, "hook succeeded");
    } else {
        tracing::warn!(%hook, release = env.release, slot = %env.slot, attempt, elapsed_ms, %outcome, "hook failed");
    }
    Ok(outcome)
}

/// Kills the child's whole process group (it leads its own, see `process_group(0)`), then
/// reaps the child. Errors are ignored: the group may already be gone.
fn kill_and_reap(child: &mut Child) {
    let group = rustix::process::Pid::from_child(child);
    if let Err(e) = rustix::process::kill_process_group(group, rustix::process::Signal::KILL) {
        if e != rustix::io::Errno::SRCH {
            tracing::warn!(pgid = child.id(), error = %e, "could not kill hook process group");
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

/// The bounded tail of a hook's combined output.
#[derive(Default)]
pub(super) struct Tail(pub(super) Vec<u8>);

impl Tail {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= OUTPUT_TAIL_BYTES {
            self.0.clear();
            self.0.extend_from_slice(&bytes[bytes.len() - OUTPUT_TAIL_BYTES..]);
        } else {
            self.0.extend_from_slice(bytes);
            let excess = self.0.len().saturating_sub(OUTPUT_TAIL_BYTES);
            self.0.drain(..excess);
        }
    }
}

/// Reader threads draining a hook's stdout and stderr into the log and a shared [`Tail`].
struct Output {
    tail: Arc<Mutex<Tail>>,
    done: mpsc::Receiver<()>,
    readers: usize,
}

impl Output {
    fn capture(hook: HookKind, child: &mut Child) -> io::Result<Output> {
        let tail = Arc::new(Mutex::new(Tail::default()));
        let (sender, done) = mpsc::channel();
        let mut readers = 0;
        let streams: [(&'static str, Option<Box<dyn Read + Send>>); 2] = [
            ("stdout", child.stdout.take().map(|s: ChildStdout| Box::new(s) as Box<dyn Read + Send>)),
            ("stderr", child.stderr.take().map(|s: ChildStderr| Box::new(s) as Box<dyn Read + Send>)),
        ];
        for (stream, reader) in streams {
            let Some(reader) = reader else { continue };
            let (tail, sender) = (Arc::clone(&tail), sender.clone());
            thread::Builder::new().name(format!("hook-{hook}-{stream}")).spawn(move || {
                drain(hook, stream, reader, &tail);
                let _ = sender.send(());
            })?;
            readers += 1;
        }
        Ok(Output { tail, done, readers })
    }

    /// Waits briefly for the readers to see end of file, then returns the tail as text.
    /// A reader still blocked (a leftover background process holds the pipe) is left to
    /// finish on its own; it keeps draining, so that process never blocks on a full pipe.
    fn finish(self) -> String {
        let deadline = Instant::now() + OUTPUT_GRACE;
        for _ in 0..self.readers {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                break;
            }
        }
        let tail = match self.tail.lock() {
            Ok(tail) => tail.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        };
        String::from_utf8_lossy(&tail).trim_end().to_owned()
    }
}

/// Reads `reader` to its end, logging whole lines (cut at [`MAX_LOGGED_LINE`]) and keeping
/// the tail.
fn drain(hook: HookKind, stream: &'static str, mut reader: impl Read, tail: &Mutex<Tail>) {
    let mut chunk = [0u8; 8192];
    let mut line = Vec::new();
    let mut cut = false;
    let log = |line: &[u8], cut: bool| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let suffix = if cut { " [line cut]" } else { "" };
        tracing::info!(%hook, stream, "{text}{suffix}");
    };
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let bytes = &chunk[..n];
        if let Ok(mut tail) = tail.lock() {
            tail.push(bytes);
        }
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let (content, ends_line) = match piece.strip_suffix(b"\n") {
                Some(content) => (content, true),
                None => (piece, false),
            };
            let room = MAX_LOGGED_LINE.saturating_sub(line.len());
            line.extend_from_slice(&content[..content.len().min(room)]);
            cut |= content.len() > room;
            if ends_line {
                log(&line, cut);
                line.clear();
                cut = false;
            }
        }
    }
    if !line.is_empty() {
        log(&line, cut);
    }
}
