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
//! apply_window = ["Sat 02:00-04:00"]    # device local time; default: any time
//! [hooks]
//! max_timeout = "10m"                   # cap on any timeout a release's ferry.toml asks for
//! trial_boots = 3                       # boots a trial may span before it counts as failed
//! [fetch]
//! rate_limit = 200000                   # bytes per second; default: no cap
//! min_rate = 1024                       # slow-retrieval floor, bytes per second (0 = off)
//! min_rate_window = "2m"                # a transfer slower over a window gives its mirror up
//! [limits]
//! max_envelope = 1048576
//! [reports]
//! url = "https://ops.example.com/v1/reports"   # absent: reports only leave on a USB stick
//! interval = "15m"                      # default: the poll interval
//! max_outbox_bytes = 1048576            # routine events are compacted beyond this
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::{ChannelName, Limits};

use crate::git::GitLimits;
use crate::window::{ApplyWindow, ApplyWindows};

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
    apply_window: Vec<String>,
    #[serde(default = "default_poll", with = "humantime_serde_compat")]
    poll_interval: Duration,
    metrics_file: Option<PathBuf>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    fetch: RawFetch,
    #[serde(default)]
    drift: RawDrift,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    reports: RawReports,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    url: Option<String>,
    #[serde(default, with = "humantime_serde_compat::option")]
    interval: Option<Duration>,
    max_outbox_bytes: Option<u64>,
}

/// Smallest `[reports] max_outbox_bytes` accepted.
pub const MIN_OUTBOX_BYTES: u64 = 16 << 10;

/// Default `[reports] max_outbox_bytes`.
pub const DEFAULT_OUTBOX_BYTES: u64 = 1 << 20;

fn default_poll() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFetch {
    #[serde(default = "default_connect", with = "humantime_serde_compat")]
    connect_timeout: Duration,
    #[serde(default = "default_stall", with = "humantime_serde_compat")]
    stall_timeout: Duration,
    /// Bytes per second.
    rate_limit: Option<u64>,
    proxy: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_max_backoff", with = "humantime_serde_compat")]
    max_backoff: Duration,
    /// Bytes per second; 0 turns the floor off.
    #[serde(default = "default_min_rate")]
    min_rate: u64,
    #[serde(default = "default_min_rate_window", with = "humantime_serde_compat")]
    min_rate_window: Duration,
}

impl Default for RawFetch {
    fn default() -> Self {
        RawFetch {
            connect_timeout: default_connect(),
            stall_timeout: default_stall(),
            rate_limit: None,
            proxy: None,
            ca_file: None,
            max_backoff: default_max_backoff(),
            min_rate: default_min_rate(),
            min_rate_window: default_min_rate_window(),
        }
    }
}

fn default_min_rate() -> u64 {
    crate::fetch::MinRate::DEFAULT.bytes_per_sec
}

fn default_min_rate_window() -> Duration {
    crate::fetch::MinRate::DEFAULT.window
}

fn default_connect() -> Duration {
    Duration::from_secs(15)
}

fn default_stall() -> Duration {
    Duration::from_secs(60)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrift {
    #[serde(default = "default_drift_interval", with = "humantime_serde_compat")]
    interval: Duration,
    #[serde(default)]
    restore: bool,
}

impl Default for RawDrift {
    fn default() -> Self {
        RawDrift { interval: default_drift_interval(), restore: false }
    }
}

fn default_drift_interval() -> Duration {
    Duration::from_secs(3600)
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

    pub mod option {
        use serde::Deserializer;
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// Where releases come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// An HTTP(S) base URL (always ending in `/`).
    Http(url::Url),
    /// A directory in the mirror layout, e.g. a USB stick's mount point; skipped while absent.
    Dir(PathBuf),
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mirror::Http(u) => write!(f, "{u}"),
            Mirror::Dir(p) => write!(f, "{}", p.display()),
        }
    }
}

/// HTTP settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// A transfer with no byte for this long is cut.
    pub stall_timeout: Duration,
    /// Download rate cap in bytes per second.
    pub rate_limit: Option<u64>,
    /// Proxy URL (otherwise the environment's `HTTPS_PROXY`/`HTTP_PROXY`).
    pub proxy: Option<String>,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// The slowest acceptable transfer (slow-retrieval defence); `None`: no floor.
    pub min_rate: Option<crate::fetch::MinRate>,
}

/// Where and how often reports go home (the `[reports]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// `POST` endpoint for report batches; `None`: reports leave only with
    /// `ferry-agent export-reports`.
    pub url: Option<url::Url>,
    /// Least time between two upload passes (they follow a poll cycle). Default: the poll
    /// interval.
    pub interval: Duration,
    /// Outbox size beyond which routine events are compacted, in bytes (message lengths
    /// plus a fixed overhead per event).
    pub max_outbox_bytes: u64,
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
    /// Mirrors in order of preference.
    pub mirrors: Vec<Mirror>,
    /// How often the daemon polls (jittered by up to a tenth).
    pub poll_interval: Duration,
    /// Prometheus textfile to write metrics into.
    pub metrics_file: Option<PathBuf>,
    /// HTTP settings.
    pub fetch: FetchSettings,
    /// How often to check the active slot for drift.
    pub drift_interval: Duration,
    /// Restore a drifted slot (re-apply its release) instead of only reporting.
    pub drift_restore: bool,
    /// Labels releases may require.
    pub labels: BTreeMap<String, String>,
    /// When applying may start (device local time); empty: any time.
    pub apply_windows: ApplyWindows,
    /// Cap on hook timeouts.
    pub max_hook_timeout: Duration,
    /// Boots a trial may span.
    pub trial_boots: u32,
    /// Wire-format limits.
    pub limits: Limits,
    /// Pack and tree limits.
    pub git_limits: GitLimits,
    /// Status reports.
    pub reports: ReportSettings,
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
        let apply_windows = ApplyWindows(
            raw.apply_window
                .iter()
                .map(|w| w.parse::<ApplyWindow>())
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("apply_window", e.to_string()))?,
        );
        let base = path.parent().unwrap_or(Path::new("."));
        let device_id = match raw.device_id {
            Some(id) => id,
            None => std::fs::read_to_string("/etc/machine-id")
                .map(|s| s.trim().to_string())
                .map_err(|e| invalid("device_id", format!("not set and /etc/machine-id is unreadable: {e}")))?,
        };
        // It names report files (`reports/<device_id>/`), so it must be one path component.
        if device_id.is_empty()
            || device_id.len() > 128
            || device_id.chars().any(|c| c.is_control() || c == '/')
            || device_id == "."
            || device_id == ".."
        {
            return Err(invalid(
                "device_id",
                format!("{device_id:?} must be 1-128 printable characters without '/', and not . or .."),
            ));
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
        let mut mirrors = Vec::new();
        for m in &raw.mirrors {
            if m.starts_with("http://") || m.starts_with("https://") {
                let mut u = url::Url::parse(m).map_err(|e| invalid("mirrors", format!("{m:?}: {e}")))?;
                if !u.path().ends_with('/') {
                    u.set_path(&format!("{}/", u.path()));
                }
                mirrors.push(Mirror::Http(u));
            } else if m.contains("://") {
                return Err(invalid("mirrors", format!("{m:?}: only http, https and directories are supported")));
            } else {
                mirrors.push(Mirror::Dir(base.join(m)));
            }
        }
        if raw.poll_interval < Duration::from_secs(1) {
            return Err(invalid("poll_interval", "must be at least 1s".into()));
        }
        if raw.fetch.rate_limit == Some(0) {
            return Err(invalid(
                "fetch.rate_limit",
                "must be more than 0 bytes per second (omit it for no cap)".into(),
            ));
        }
        if raw.fetch.min_rate_window < Duration::from_secs(1) {
            return Err(invalid("fetch.min_rate_window", "must be at least 1s".into()));
        }
        let reports = ReportSettings {
            url: match &raw.reports.url {
                None => None,
                Some(u) => {
                    let parsed = url::Url::parse(u).map_err(|e| invalid("reports.url", format!("{u:?}: {e}")))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(invalid("reports.url", format!("{u:?}: only http and https are supported")));
                    }
                    Some(parsed)
                }
            },
            interval: raw.reports.interval.unwrap_or(raw.poll_interval),
            max_outbox_bytes: raw.reports.max_outbox_bytes.unwrap_or(DEFAULT_OUTBOX_BYTES),
        };
        if reports.max_outbox_bytes < MIN_OUTBOX_BYTES {
            return Err(invalid("reports.max_outbox_bytes", format!("must be at least {MIN_OUTBOX_BYTES}")));
        }
        let fetch = FetchSettings {
            connect_timeout: raw.fetch.connect_timeout,
            stall_timeout: raw.fetch.stall_timeout,
            rate_limit: raw.fetch.rate_limit,
            proxy: raw.fetch.proxy,
            ca_file: raw.fetch.ca_file.map(|p| base.join(p)),
            max_backoff: raw.fetch.max_backoff,
            min_rate: (raw.fetch.min_rate > 0).then_some(crate::fetch::MinRate {
                bytes_per_sec: raw.fetch.min_rate,
                window: raw.fetch.min_rate_window,
            }),
        };
        Ok(Config {
            path: path.to_path_buf(),
            channel,
            trust_root: base.join(raw.trust_root),
            state_dir: base.join(raw.state_dir),
            device_id,
            mirrors,
            poll_interval: raw.poll_interval,
            metrics_file: raw.metrics_file.map(|p| base.join(p)),
            fetch,
            drift_interval: raw.drift.interval,
            drift_restore: raw.drift.restore,
            labels: raw.labels,
            apply_windows,
            max_hook_timeout: raw.hooks.max_timeout,
            trial_boots: raw.hooks.trial_boots,
            limits,
            git_limits,
            reports,
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
    fn mirrors_and_daemon_settings() {
        let text = "channel = \"s\"\ntrust_root = \"r\"\ndevice_id = \"d\"\nmirrors = [\"https://m.example/ferry\", \"usb\"]\n\
                    poll_interval = \"30s\"\n[fetch]\nrate_limit = 1000\n[drift]\nrestore = true\n";
        let c = Config::parse(text, Path::new("/etc/ferry/agent.toml")).expect("valid");
        assert_eq!(c.mirrors[0], Mirror::Http(url::Url::parse("https://m.example/ferry/").expect("url")));
        assert_eq!(c.mirrors[1], Mirror::Dir(PathBuf::from("/etc/ferry/usb")));
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.fetch.rate_limit, Some(1000));
        assert!(c.drift_restore);
        let bad = "channel = \"s\"\ntrust_root = \"r\"\ndevice_id = \"d\"\nmirrors = [\"ftp://x\"]\n";
        assert!(Config::parse(bad, Path::new("a.toml")).expect_err("ftp").to_string().contains("mirrors"));
    }

    #[test]
    fn the_example_config_parses() {
        // device_id goes before the file's first table; the file leaves it to /etc/machine-id.
        let text = format!("device_id = \"example\"\n{}", include_str!("../../deploy/examples/agent.toml"));
        Config::parse(&text, Path::new("/etc/ferry/agent.toml")).expect("deploy/examples/agent.toml is valid");
    }

    #[test]
    fn reports_section_defaults_and_checks() {
        let base = "channel = \"s\"\ntrust_root = \"r\"\ndevice_id = \"d\"\npoll_interval = \"2m\"\n";
        let c = Config::parse(base, Path::new("a.toml")).expect("valid");
        assert_eq!(c.reports.url, None);
        assert_eq!(c.reports.interval, Duration::from_secs(120), "defaults to the poll interval");
        assert_eq!(c.reports.max_outbox_bytes, DEFAULT_OUTBOX_BYTES);
        let text = format!(
            "{base}[reports]\nurl = \"http://10.0.0.1:8080/v1/reports\"\ninterval = \"1h\"\nmax_outbox_bytes = 65536\n"
        );
        let c = Config::parse(&text, Path::new("a.toml")).expect("valid");
        assert_eq!(c.reports.url.as_ref().map(|u| u.as_str()), Some("http://10.0.0.1:8080/v1/reports"));
        assert_eq!(c.reports.interval, Duration::from_secs(3600));
        assert_eq!(c.reports.max_outbox_bytes, 65536);
        for (bad, key) in [
            ("[reports]\nurl = \"ftp://x/\"\n", "reports.url"),
            ("[reports]\nmax_outbox_bytes = 10\n", "reports.max_outbox_bytes"),
            ("[reports]\nuri = \"http://x/\"\n", "uri"),
        ] {
            let err = Config::parse(&format!("{base}{bad}"), Path::new("a.toml")).expect_err(bad);
            assert!(err.to_string().contains(key), "{err}");
        }
        let dots = Config::parse("channel = \"s\"\ntrust_root = \"r\"\ndevice_id = \"..\"\n", Path::new("a.toml"));
        assert!(dots.expect_err("..").to_string().contains("device_id"));
    }

    #[test]
    fn minimum_rate_defaults_and_checks() {
        let base = "channel = \"s\"\ntrust_root = \"r\"\ndevice_id = \"d\"\n";
        let c = Config::parse(base, Path::new("a.toml")).expect("valid");
        assert_eq!(c.fetch.min_rate, Some(crate::fetch::MinRate::DEFAULT));
        let c =
            Config::parse(&format!("{base}[fetch]\nmin_rate = 4096\nmin_rate_window = \"30s\"\n"), Path::new("a.toml"))
                .expect("valid");
        let floor = crate::fetch::MinRate { bytes_per_sec: 4096, window: Duration::from_secs(30) };
        assert_eq!(c.fetch.min_rate, Some(floor));
        let c = Config::parse(&format!("{base}[fetch]\nmin_rate = 0\n"), Path::new("a.toml")).expect("valid");
        assert_eq!(c.fetch.min_rate, None, "0 turns the floor off");
        let err = Config::parse(&format!("{base}[fetch]\nmin_rate_window = \"0s\"\n"), Path::new("a.toml"))
            .expect_err("zero window");
        assert!(err.to_string().contains("fetch.min_rate_window"), "{err}");
        let err = Config::parse(&format!("{base}[fetch]\nmin_rate = \"1 KiB/s\"\n"), Path::new("a.toml"))
            .expect_err("not a number");
        assert!(err.to_string().contains("\"1 KiB/s\""), "{err}");
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
