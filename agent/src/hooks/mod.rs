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

mod run;
mod spec;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use run::{run_activate, run_health, run_rollback, HookEnv, HookLimits, HookOutcome};
pub use spec::{load, HookCommand, HookSpec};

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
