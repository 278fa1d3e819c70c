//! A release's hooks: the `ferry.toml` at the root of its tree, and running its activate,
//! health and rollback commands (apply steps 6 and 7).
//!
//! ```toml
//! [hooks]
//! activate = ["/bin/sh", "-c", "systemctl restart myapp"]  # argv array, or a string run via /bin/sh -c
//! health = "curl -fsS localhost:8080/health"
//! rollback = "systemctl restart myapp"
//! activate_timeout = "60s"   # humantime durations
//! health_timeout = "10s"
//! health_retries = 3         # further attempts after a failed first one
//! health_interval = "2s"
//! rollback_timeout = "60s"
//! ```
//!
//! A missing file, or a missing hook, means "nothing to run": activation succeeds and the
//! release counts as healthy. Unknown keys are errors, reported in one line naming the file
//! and the key, because a misspelt `helth` silently skipping the health check is worse than
//! a refused release.
//!
//! Each command runs with the slot as its working directory, a small environment (`PATH`,
//! `HOME`, locale, `TZ`, `TMPDIR`, `USER`, `LOGNAME` passed through, nothing else from the
//! agent) plus `FERRY_RELEASE`, `FERRY_COMMIT`, `FERRY_SLOT`, `FERRY_PREVIOUS_SLOT` (empty
//! when none), `FERRY_SLOT_PATH`, `FERRY_CHANNEL`, `FERRY_HOOK` and `FERRY_ATTEMPT`; stdin is
//! `/dev/null`. Output is logged line by line and its last [`OUTPUT_TAIL_BYTES`] kept for the
//! failure message. Each command gets its own process group; on timeout the whole group is
//! killed with SIGKILL, so a shell's children go too (a child that makes its own session
//! escapes, as with any process supervisor short of cgroups). When a hook exits in time, any
//! background processes it left are *not* killed: starting a daemon from `activate` is
//! legitimate, if unwise.
//!
//! Everything here blocks; the caller runs it on a blocking thread.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The hooks file at the root of a release tree.
pub const FILE_NAME: &str = "ferry.toml";

/// How much of a hook's combined stdout and stderr is kept for error messages.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

/// Default `activate_timeout`.
pub const DEFAULT_ACTIVATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `health_timeout` (per attempt).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `health_retries`.
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;
/// Default `health_interval`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Default `rollback_timeout`.
pub const DEFAULT_ROLLBACK_TIMEOUT: Duration = Duration::from_secs(60);

/// `ferry.toml` is a few lines; refuse to read a large file into memory.
const MAX_FILE_BYTES: u64 = 64 * 1024;
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

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Run right after `current` switched to the new slot.
    Activate,
    /// Run after activation, with retries, to decide whether to keep the release.
    Health,
    /// Run after switching back to the previous slot.
    Rollback,
}

impl HookKind {
    /// `activate`, `health` or `rollback`: the key in `ferry.toml` and the `FERRY_HOOK` value.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Activate => "activate",
            HookKind::Health => "health",
            HookKind::Rollback => "rollback",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookCommand {
    /// Run as is: program and arguments. A relative program with a `/` in it
    /// (`./bin/activate`) is resolved against the slot; a bare name is looked up in `PATH`.
    Argv(Vec<String>),
    /// Run with `/bin/sh -c`.
    Shell(String),
}

impl HookCommand {
    /// The program to start and its arguments, for a hook run in `slot_dir`.
    fn program_and_args(&self, slot_dir: &Path) -> (PathBuf, Vec<String>) {
        match self {
            HookCommand::Shell(script) => ("/bin/sh".into(), vec!["-c".into(), script.clone()]),
            HookCommand::Argv(argv) => {
                let (program, args) = argv.split_first().map_or(("", &[][..]), |(p, a)| (p, a));
                let program = Path::new(program);
                let program = if program.is_relative() && program.components().count() > 1 {
                    slot_dir.join(program)
                } else {
                    program.to_path_buf()
                };
                (program, args.to_vec())
            }
        }
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        let parts: &[String] = match self {
            HookCommand::Argv(argv) if argv.is_empty() => {
                return Err(format!("`{key}` is an empty array; give a program to run"))
            }
            HookCommand::Argv(argv) if argv[0].trim().is_empty() => {
                return Err(format!("`{key}` has an empty program name"))
            }
            HookCommand::Shell(script) if script.trim().is_empty() => {
                return Err(format!("`{key}` is an empty command"))
            }
            HookCommand::Argv(argv) => argv,
            HookCommand::Shell(script) => std::slice::from_ref(script),
        };
        if parts.iter().any(|p| p.contains('\0')) {
            return Err(format!("`{key}` contains a NUL character"));
        }
        Ok(())
    }
}

impl fmt::Display for HookCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookCommand::Argv(argv) => write!(f, "{argv:?}"),
            HookCommand::Shell(script) => write!(f, "{script:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for HookCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = HookCommand;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command: a string (run with /bin/sh -c) or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HookCommand, E> {
                Ok(HookCommand::Shell(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HookCommand, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(HookCommand::Argv(argv))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

/// A duration written like `10s`, `1m 30s` or `500ms`.
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| de::Error::custom(format!("invalid duration {text:?} ({e}); write e.g. \"10s\" or \"2m\"")))
    }
}

/// `ferry.toml` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    hooks: RawHooks,
}

/// `[hooks]` as written; every key optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawHooks {
    activate: Option<HookCommand>,
    health: Option<HookCommand>,
    rollback: Option<HookCommand>,
    activate_timeout: Option<HumanDuration>,
    health_timeout: Option<HumanDuration>,
    health_retries: Option<u32>,
    health_interval: Option<HumanDuration>,
    rollback_timeout: Option<HumanDuration>,
}

/// A release's validated hooks. [`HookSpec::default`] is "no hooks".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    activate: Option<HookCommand>,
    health: Option<HookCommand>,
    rollback: Option<HookCommand>,
    activate_timeout: Duration,
    health_timeout: Duration,
    health_retries: u32,
    health_interval: Duration,
    rollback_timeout: Duration,
}

impl Default for HookSpec {
    fn default() -> Self {
        HookSpec {
            activate: None,
            health: None,
            rollback: None,
            activate_timeout: DEFAULT_ACTIVATE_TIMEOUT,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            health_retries: DEFAULT_HEALTH_RETRIES,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            rollback_timeout: DEFAULT_ROLLBACK_TIMEOUT,
        }
    }
}

impl HookSpec {
    /// Parses the text of a `ferry.toml`; `path` is only used in error messages.
    /// Does no I/O.
    pub fn parse(text: &str, path: &Path) -> Result<HookSpec, HookError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| malformed_from_toml(path, text, &e))?;
        let invalid = |key: &str, message: String| HookError::Malformed {
            path: path.to_path_buf(),
            line: None,
            key: Some(format!("hooks.{key}")),
            message,
        };
        let hooks = raw.hooks;
        for (key, command) in [("activate", &hooks.activate), ("health", &hooks.health), ("rollback", &hooks.rollback)]
        {
            if let Some(command) = command {
                command.validate(key).map_err(|m| invalid(key, m))?;
            }
        }
        let defaults = HookSpec::default();
        let positive = |key: &str, value: Option<HumanDuration>, default: Duration| match value {
            None => Ok(default),
            Some(HumanDuration(d)) if d.is_zero() => Err(invalid(key, format!("`{key}` must be longer than 0s"))),
            Some(HumanDuration(d)) => Ok(d),
        };
        Ok(HookSpec {
            activate_timeout: positive("activate_timeout", hooks.activate_timeout, defaults.activate_timeout)?,
            health_timeout: positive("health_timeout", hooks.health_timeout, defaults.health_timeout)?,
            health_retries: hooks.health_retries.unwrap_or(defaults.health_retries),
            health_interval: hooks.health_interval.map_or(defaults.health_interval, |d| d.0),
            rollback_timeout: positive("rollback_timeout", hooks.rollback_timeout, defaults.rollback_timeout)?,
            activate: hooks.activate,
            health: hooks.health,
            rollback: hooks.rollback,
        })
    }

    /// The activate command, if any.
    pub fn activate(&self) -> Option<&HookCommand> {
        self.activate.as_ref()
    }
    /// The health command, if any.
    pub fn health(&self) -> Option<&HookCommand> {
        self.health.as_ref()
    }
    /// The rollback command, if any.
    pub fn rollback(&self) -> Option<&HookCommand> {
        self.rollback.as_ref()
    }
    /// Time allowed for the activate command.
    pub fn activate_timeout(&self) -> Duration {
        self.activate_timeout
    }
    /// Time allowed for each health attempt.
    pub fn health_timeout(&self) -> Duration {
        self.health_timeout
    }
    /// Further health attempts after a failed first one.
    pub fn health_retries(&self) -> u32 {
        self.health_retries
    }
    /// Pause between health attempts.
    pub fn health_interval(&self) -> Duration {
        self.health_interval
    }
    /// Time allowed for the rollback command.
    pub fn rollback_timeout(&self) -> Duration {
        self.rollback_timeout
    }
    /// Whether any hook is configured.
    pub fn has_any(&self) -> bool {
        self.activate.is_some() || self.health.is_some() || self.rollback.is_some()
    }
}

/// Reads `<slot_dir>/ferry.toml`; a missing file means no hooks.
pub fn load(slot_dir: &Path) -> Result<HookSpec, HookError> {
    let path = slot_dir.join(FILE_NAME);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HookSpec::default()),
        Err(source) => return Err(HookError::Read { path, source }),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| HookError::Read { path: path.clone(), source })?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(HookError::Malformed {
            path,
            line: None,
            key: None,
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    HookSpec::parse(&text, &path)
}

/// Turns a TOML error into one line: file, line number, the key on that line, message.
fn malformed_from_toml(path: &Path, text: &str, error: &toml::de::Error) -> HookError {
    let (line, key) = match error.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line_index = text.as_bytes()[..start].iter().filter(|&&b| b == b'\n').count();
            (Some(line_index + 1), key_on_line(text, line_index))
        }
        None => (None, None),
    };
    HookError::Malformed { path: path.to_path_buf(), line, key, message: error.message().trim().replace('\n', "; ") }
}

/// The dotted key assigned on line `index` (`hooks.health_timeout`), or the table a header
/// line opens, found by reading the text around it. Best effort, for error messages only.
fn key_on_line(text: &str, index: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(index)?.trim();
    let header = |l: &str| {
        let l = l.trim();
        l.starts_with('[').then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    };
    if let Some(table) = header(line) {
        return Some(table);
    }
    // A line without `=` continues a multi-line value: the line number has to do.
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    match lines[..index].iter().rev().find_map(|l| header(l)) {
        Some(table) => Some(format!("{table}.{key}")),
        None => Some(key.to_owned()),
    }
}

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

/// A problem with the hooks file, or with the agent's ability to run a hook at all. A
/// hook that runs and fails is not an error but a [`HookOutcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// `ferry.toml` exists but could not be read.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `ferry.toml` is not valid.
    #[error("{}", malformed_line(path, *line, key.as_deref(), message))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// The offending key (`hooks.health_timeout`), when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Waiting for or killing a hook failed in the agent itself.
    #[error("could not run the {hook} hook: {source}")]
    Io {
        /// Which hook.
        hook: HookKind,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl HookError {
    /// The typed reason reported: a bad `ferry.toml` is the release's fault.
    pub fn reason(&self) -> ferry_proto::Reason {
        match self {
            HookError::Malformed { .. } => ferry_proto::Reason::Malformed,
            HookError::Read { .. } | HookError::Io { .. } => ferry_proto::Reason::Io,
        }
    }
}

fn malformed_line(path: &Path, line: Option<usize>, key: Option<&str>, message: &str) -> String {
    let mut out = format!("invalid {}", path.display());
    if let Some(line) = line {
        out.push_str(&format!(" line {line}"));
    }
    if let Some(key) = key {
        out.push_str(&format!(" at key `{key}`"));
    }
    out.push_str(": ");
    out.push_str(message);
    out
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
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::symlink;

    fn spec(text: &str) -> HookSpec {
        HookSpec::parse(text, Path::new("/slot/ferry.toml")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        let err = HookSpec::parse(text, Path::new("/slot/ferry.toml")).unwrap_err();
        assert!(matches!(err, HookError::Malformed { .. }), "{err:?}");
        let message = err.to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(message.contains("/slot/ferry.toml"), "names the file: {message}");
        message
    }

    fn env(slot: &Path) -> HookEnv {
        HookEnv {
            release: 42,
            commit: "3f1c0e4b9a7d2c5e8f6a1b0c9d8e7f6a5b4c3d2e".into(),
            slot: "b".into(),
            previous_slot: None,
            slot_path: slot.to_path_buf(),
            channel: "stable".into(),
        }
    }

    fn limits() -> HookLimits {
        HookLimits::default()
    }

    #[test]
    fn full_file_parses() {
        let s = spec(
            r#"
            [hooks]
            activate = ["/bin/sh", "-c", "systemctl restart myapp"]
            health = "curl -fsS localhost:8080/health"
            rollback = "systemctl restart myapp"
            activate_timeout = "90s"
            health_timeout = "10s"
            health_retries = 5
            health_interval = "1m 30s"
            rollback_timeout = "500ms"
            "#,
        );
        assert_eq!(
            s.activate(),
            Some(&HookCommand::Argv(vec!["/bin/sh".into(), "-c".into(), "systemctl restart myapp".into()]))
        );
        assert_eq!(s.health(), Some(&HookCommand::Shell("curl -fsS localhost:8080/health".into())));
        assert_eq!(s.activate_timeout(), Duration::from_secs(90));
        assert_eq!(s.health_retries(), 5);
        assert_eq!(s.health_interval(), Duration::from_secs(90));
        assert_eq!(s.rollback_timeout(), Duration::from_millis(500));
    }

    #[test]
    fn defaults_are_explicit() {
        let s = spec("[hooks]\nhealth = \"true\"\n");
        assert_eq!(s.activate(), None);
        assert_eq!(s.activate_timeout(), DEFAULT_ACTIVATE_TIMEOUT);
        assert_eq!(s.health_timeout(), DEFAULT_HEALTH_TIMEOUT);
        assert_eq!(s.health_retries(), DEFAULT_HEALTH_RETRIES);
        assert_eq!(s.health_interval(), DEFAULT_HEALTH_INTERVAL);
        assert_eq!(spec(""), HookSpec::default());
        assert!(!spec("[hooks]\n").has_any());
    }

    #[test]
    fn missing_file_means_no_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let s = load(dir.path()).unwrap();
        assert_eq!(s, HookSpec::default());
        assert!(!s.has_any());
        assert_eq!(run_activate(&s, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);
        assert_eq!(run_health(&s, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);
        assert_eq!(run_rollback(&s, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);
    }

    #[test]
    fn load_reads_the_file_in_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "[hooks]\nactivate = \"true\"\n").unwrap();
        assert_eq!(load(dir.path()).unwrap().activate(), Some(&HookCommand::Shell("true".into())));
        fs::write(dir.path().join(FILE_NAME), "[hooks]\nhelth = \"true\"\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().join(FILE_NAME).display().to_string()), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let message = parse_err("[hooks]\nactivate = \"true\"\nhelth = \"curl x\"\n");
        assert!(message.contains("helth"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("`hooks.helth`"), "{message}");

        let message = parse_err("[hooks]\n[deploy]\nx = 1\n");
        assert!(message.contains("deploy"), "{message}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let message = parse_err("[hooks]\nhealth_timeout = \"10 parsecs\"\n");
        assert!(message.contains("hooks.health_timeout") && message.contains("10 parsecs"), "{message}");
        let message = parse_err("[hooks]\nhealth_retries = -1\n");
        assert!(message.contains("hooks.health_retries"), "{message}");
        let message = parse_err("[hooks]\nactivate = 7\n");
        assert!(message.contains("hooks.activate") && message.contains("a command"), "{message}");
        let message = parse_err("[hooks]\nactivate = []\n");
        assert!(message.contains("hooks.activate") && message.contains("empty"), "{message}");
        let message = parse_err("[hooks]\nhealth = \"  \"\n");
        assert!(message.contains("hooks.health"), "{message}");
        let message = parse_err("[hooks]\nrollback_timeout = \"0s\"\n");
        assert!(message.contains("hooks.rollback_timeout"), "{message}");
        let message = parse_err("[hooks\nactivate = \"true\"\n");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn success_and_failure_with_exit_code_and_output_tail() {
        let dir = tempfile::tempdir().unwrap();
        let ok = spec("[hooks]\nactivate = [\"/bin/sh\", \"-c\", \"echo starting\"]\n");
        assert_eq!(run_activate(&ok, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);

        let failing = spec("[hooks]\nactivate = \"echo to-stdout; echo to-stderr >&2; exit 3\"\n");
        match run_activate(&failing, &env(dir.path()), &limits()).unwrap() {
            HookOutcome::Failed { status, output_tail } => {
                assert!(status.contains('3'), "{status}");
                assert!(output_tail.contains("to-stdout"), "{output_tail}");
                assert!(output_tail.contains("to-stderr"), "{output_tail}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn output_tail_is_bounded_and_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec("[hooks]\nrollback = \"head -c 200000 /dev/zero | tr '\\\\0' x; echo; echo THE-END; exit 1\"\n");
        match run_rollback(&s, &env(dir.path()), &limits()).unwrap() {
            HookOutcome::Failed { output_tail, .. } => {
                assert!(output_tail.len() <= OUTPUT_TAIL_BYTES, "{}", output_tail.len());
                assert!(output_tail.ends_with("THE-END"), "{}", &output_tail[output_tail.len() - 20..]);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn program_that_cannot_start_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec("[hooks]\nactivate = [\"/nonexistent/ferry-hook\"]\n");
        match run_activate(&s, &env(dir.path()), &limits()).unwrap() {
            HookOutcome::Failed { status, .. } => {
                assert!(status.contains("could not start"), "{status}")
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn relative_program_is_resolved_in_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        symlink("/bin/sh", dir.path().join("bin/sh")).unwrap();
        let s = spec("[hooks]\nactivate = [\"./bin/sh\", \"-c\", \"echo ran > ran.txt\"]\n");
        assert_eq!(run_activate(&s, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);
        assert_eq!(fs::read_to_string(dir.path().join("ran.txt")).unwrap(), "ran\n");
    }

    #[test]
    fn a_relative_slot_path_is_made_absolute_for_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        symlink("/bin/sh", dir.path().join("bin/sh")).unwrap();
        let s = spec("[hooks]\nactivate = [\"./bin/sh\", \"-c\", \"echo $FERRY_SLOT_PATH > where.txt\"]\n");
        // Relative to the agent's working directory, as a relative `state_dir` makes it.
        let cwd = std::env::current_dir().unwrap();
        let relative: PathBuf = std::iter::repeat_n("..", cwd.components().count() - 1)
            .collect::<PathBuf>()
            .join(dir.path().strip_prefix("/").unwrap());
        assert!(relative.is_relative());
        let hook_env = HookEnv { slot_path: relative, ..env(dir.path()) };
        assert_eq!(run_activate(&s, &hook_env, &limits()).unwrap(), HookOutcome::Ok);
        let seen = fs::read_to_string(dir.path().join("where.txt")).unwrap();
        assert!(Path::new(seen.trim()).is_absolute(), "{seen}");
        assert_eq!(fs::canonicalize(seen.trim()).unwrap(), fs::canonicalize(dir.path()).unwrap());
    }

    fn alive(pid: &str) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name; a zombie is dead.
            Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()), Some("Z" | "X")),
            Err(_) => false,
        }
    }

    #[test]
    fn timeout_kills_the_child_and_its_grandchild() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            "[hooks]\nactivate = \"sleep 100 & echo $! > grandchild.pid; echo waiting; sleep 100\"\n\
             activate_timeout = \"1s\"\n",
        );
        let started = Instant::now();
        let outcome = run_activate(&s, &env(dir.path()), &limits()).unwrap();
        let elapsed = started.elapsed();
        match &outcome {
            HookOutcome::TimedOut { after, output_tail } => {
                assert_eq!(*after, Duration::from_secs(1));
                assert!(output_tail.contains("waiting"), "{output_tail}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "killed promptly: {elapsed:?}");

        let grandchild = fs::read_to_string(dir.path().join("grandchild.pid")).unwrap();
        let grandchild = grandchild.trim();
        let give_up = Instant::now() + Duration::from_secs(3);
        while alive(grandchild) && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(grandchild), "grandchild {grandchild} survived the timeout");
    }

    #[test]
    fn agent_limit_caps_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec("[hooks]\nrollback = \"sleep 100\"\nrollback_timeout = \"1h\"\n");
        let limits = HookLimits { max_timeout: Duration::from_millis(300), ..HookLimits::default() };
        let started = Instant::now();
        let outcome = run_rollback(&s, &env(dir.path()), &limits).unwrap();
        assert!(matches!(outcome, HookOutcome::TimedOut { after, .. } if after == Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    const THIRD_TIME_LUCKY: &str = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; \
         echo attempt $n $FERRY_ATTEMPT; [ $n -ge 3 ]";

    fn counting_spec(retries: u32) -> HookSpec {
        spec(&format!(
            "[hooks]\nhealth = \"{THIRD_TIME_LUCKY}\"\nhealth_retries = {retries}\nhealth_interval = \"10ms\"\n"
        ))
    }

    #[test]
    fn health_retries_until_the_first_success() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = run_health(&counting_spec(5), &env(dir.path()), &limits()).unwrap();
        assert_eq!(outcome, HookOutcome::Ok);
        assert_eq!(fs::read_to_string(dir.path().join("count")).unwrap().trim(), "3", "stops at success");
    }

    #[test]
    fn health_gives_up_after_its_retries() {
        let dir = tempfile::tempdir().unwrap();
        match run_health(&counting_spec(1), &env(dir.path()), &limits()).unwrap() {
            HookOutcome::Failed { output_tail, .. } => {
                assert_eq!(output_tail, "attempt 2 2", "last attempt's output");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(fs::read_to_string(dir.path().join("count")).unwrap().trim(), "2");

        let dir = tempfile::tempdir().unwrap();
        let limits = HookLimits { max_health_retries: 0, ..HookLimits::default() };
        assert!(!run_health(&counting_spec(5), &env(dir.path()), &limits).unwrap().is_ok());
        assert_eq!(fs::read_to_string(dir.path().join("count")).unwrap().trim(), "1", "capped by the agent");
    }

    #[test]
    fn hooks_see_ferry_variables_and_a_clean_environment() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec("[hooks]\nactivate = \"env > env.txt\"\n");
        let mut hook_env = env(dir.path());
        assert!(run_activate(&s, &hook_env, &limits()).unwrap().is_ok());
        let text = fs::read_to_string(dir.path().join("env.txt")).unwrap();
        let vars: std::collections::HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        assert_eq!(vars.get("FERRY_RELEASE"), Some(&"42"));
        assert_eq!(vars.get("FERRY_COMMIT"), Some(&"3f1c0e4b9a7d2c5e8f6a1b0c9d8e7f6a5b4c3d2e"));
        assert_eq!(vars.get("FERRY_SLOT"), Some(&"b"));
        assert_eq!(vars.get("FERRY_PREVIOUS_SLOT"), Some(&""));
        assert_eq!(vars.get("FERRY_SLOT_PATH").map(PathBuf::from), Some(dir.path().to_path_buf()));
        assert_eq!(vars.get("FERRY_CHANNEL"), Some(&"stable"));
        assert_eq!(vars.get("FERRY_HOOK"), Some(&"activate"));
        assert!(vars.contains_key("PATH"));
        // `cargo test` runs us with CARGO_* set; none of it may leak into hooks.
        assert!(!vars.keys().any(|k| k.starts_with("CARGO") || k.starts_with("RUST_")), "{text}");

        hook_env.previous_slot = Some("a".into());
        assert!(run_activate(&s, &hook_env, &limits()).unwrap().is_ok());
        let text = fs::read_to_string(dir.path().join("env.txt")).unwrap();
        assert!(text.lines().any(|l| l == "FERRY_PREVIOUS_SLOT=a"), "{text}");
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        tail.push(&[b'a'; 3000]);
        tail.push(&[b'b'; 3000]);
        assert_eq!(tail.0.len(), OUTPUT_TAIL_BYTES);
        assert_eq!(tail.0[OUTPUT_TAIL_BYTES - 1], b'b');
        assert_eq!(tail.0[0], b'a');
        tail.push(&[b'c'; 10_000]);
        assert!(tail.0.iter().all(|&b| b == b'c'));
    }
}
