//! The agent's configuration: TOML (`/etc/ferry/agent.toml` by default), parsed without side
//! effects, unknown keys refused by name, then validated into a runtime [`Config`].
//!
//! ```toml
//! channel = "stable"
//! trust_root = "/etc/ferry/root.1"     # the root this device was provisioned with
//! state_dir = "/var/lib/ferry"
//! device_id = "pump-17"                 # default: /etc/machine-id
//! mirrors = ["https://updates.example.com/ferry", "/media/ferry-usb"]
//! labels = { site = "plant7" }
//! [hooks]
//! max_timeout = "10m"                   # cap on any timeout a release's ferry.toml asks for
//! trial_boots = 3                       # boots a trial may span before it counts as failed
//! [limits]
//! max_envelope = 1048576
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::{ChannelName, Limits};

use crate::git::GitLimits;

/// Default config file path.
pub const DEFAULT_PATH: &str = "/etc/ferry/agent.toml";

/// A config that cannot be used; always names the file and, where it can, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// TOML or schema error (serde names the unknown or bad key).
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value that parses but is not acceptable.
    #[error("config {path}: {key}: {message}")]
    Invalid { path: PathBuf, key: &'static str, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    channel: String,
    trust_root: PathBuf,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    device_id: Option<String>,
    #[serde(default)]
    mirrors: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    limits: RawLimits,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ferry")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    #[serde(default = "default_max_timeout", with = "humantime_serde_compat")]
    max_timeout: Duration,
    #[serde(default = "default_trial_boots")]
    trial_boots: u32,
}

impl Default for RawHooks {
    fn default() -> Self {
        RawHooks { max_timeout: default_max_timeout(), trial_boots: default_trial_boots() }
    }
}

fn default_max_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_trial_boots() -> u32 {
    3
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_envelope: Option<usize>,
    max_roots_walked: Option<u64>,
    max_decompressed: Option<u64>,
    max_decompression_ratio: Option<u64>,
    max_objects: Option<u64>,
    max_object_size: Option<u64>,
    max_tree_depth: Option<usize>,
    max_path_len: Option<usize>,
    max_tree_entries: Option<usize>,
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like 30s or 5m: {e}")))
    }
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The channel this device follows.
    pub channel: ChannelName,
    /// The provisioned trust root file.
    pub trust_root: PathBuf,
    /// Where all state lives.
    pub state_dir: PathBuf,
    /// This device's id.
    pub device_id: String,
    /// Mirrors in order of preference: URLs or directories.
    pub mirrors: Vec<String>,
    /// Labels releases may require.
    pub labels: BTreeMap<String, String>,
    /// Cap on hook timeouts.
    pub max_hook_timeout: Duration,
    /// Boots a trial may span.
    pub trial_boots: u32,
    /// Wire-format limits.
    pub limits: Limits,
    /// Pack and tree limits.
    pub git_limits: GitLimits,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is for messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string() + &location(text, e.span()),
        })?;
        let invalid =
            |key: &'static str, message: String| ConfigError::Invalid { path: path.to_path_buf(), key, message };
        let channel: ChannelName =
            raw.channel.parse().map_err(|e: ferry_proto::names::NameError| invalid("channel", e.to_string()))?;
        for (k, v) in &raw.labels {
            ferry_proto::names::check_label_key(k).map_err(|e| invalid("labels", e.to_string()))?;
            ferry_proto::names::check_label_value(v).map_err(|e| invalid("labels", e.to_string()))?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let device_id = match raw.device_id {
            Some(id) => id,
            None => std::fs::read_to_string("/etc/machine-id")
                .map(|s| s.trim().to_string())
                .map_err(|e| invalid("device_id", format!("not set and /etc/machine-id is unreadable: {e}")))?,
        };
        if device_id.is_empty() || device_id.len() > 128 || device_id.chars().any(|c| c.is_control() || c == '/') {
            return Err(invalid("device_id", format!("{device_id:?} must be 1-128 printable characters without '/'")));
        }
        if raw.hooks.trial_boots == 0 {
            return Err(invalid("hooks.trial_boots", "must be at least 1".into()));
        }
        let mut limits = Limits::default();
        let l = &raw.limits;
        set(&mut limits.max_envelope, l.max_envelope);
        set(&mut limits.max_roots_walked, l.max_roots_walked);
        set(&mut limits.max_decompressed, l.max_decompressed);
        set(&mut limits.max_decompression_ratio, l.max_decompression_ratio);
        let mut git_limits = GitLimits::default();
        set(&mut git_limits.max_objects, l.max_objects);
        set(&mut git_limits.max_object_size, l.max_object_size);
        set(&mut git_limits.max_tree_depth, l.max_tree_depth);
        set(&mut git_limits.max_path_len, l.max_path_len);
        set(&mut git_limits.max_tree_entries, l.max_tree_entries);
        Ok(Config {
            path: path.to_path_buf(),
            channel,
            trust_root: base.join(raw.trust_root),
            state_dir: base.join(raw.state_dir),
            device_id,
            mirrors: raw.mirrors,
            labels: raw.labels,
            max_hook_timeout: raw.hooks.max_timeout,
            trial_boots: raw.hooks.trial_boots,
            limits,
            git_limits,
        })
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_and_relative_paths() {
        let c = Config::parse(
            "channel = \"stable\"\ntrust_root = \"root.1\"\nstate_dir = \"state\"\ndevice_id = \"d1\"\n",
            Path::new("/etc/ferry/agent.toml"),
        )
        .expect("valid");
        assert_eq!(c.trust_root, PathBuf::from("/etc/ferry/root.1"));
        assert_eq!(c.state_dir, PathBuf::from("/etc/ferry/state"));
        assert_eq!(c.trial_boots, 3);
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            Config::parse("channel = \"s\"\ntrust_root = \"r\"\ndevice_id = \"d\"\nchanel = 1\n", Path::new("a.toml"))
                .expect_err("unknown key");
        assert!(err.to_string().contains("chanel"), "{err}");
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse("channel = \"Bad/Name\"\ntrust_root = \"r\"\ndevice_id = \"d\"\n", Path::new("a.toml"))
            .expect_err("bad");
        assert!(err.to_string().contains("channel"), "{err}");
        let err = Config::parse(
            "channel = \"s\"\ntrust_root = \"r\"\ndevice_id = \"d\"\n[hooks]\nmax_timeout = \"soon\"\n",
            Path::new("a.toml"),
        )
        .expect_err("bad duration");
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
