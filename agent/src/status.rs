//! `ferry-agent status` and `ferry-agent history`: read-only views of the state directory.
//! They take no lock and change nothing, so they work while an apply runs.

use serde::Serialize;

use crate::config::Config;
use crate::failure::Failure;
use crate::slots::{SlotRecord, Slots};
use crate::store::{Event, JournalEntry, Store};

/// What `status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This device.
    pub device_id: String,
    /// The channel followed.
    pub channel: String,
    /// Active slot (`a`/`b`), if any release is applied.
    pub slot: Option<String>,
    /// What the active slot holds.
    pub applied: Option<SlotRecord>,
    /// The other slot's release, the rollback target.
    pub previous: Option<SlotRecord>,
    /// The newest apply attempt.
    pub last_apply: Option<JournalEntry>,
    /// `none`, or the open journal state (a trial interrupted by a crash shows here until
    /// the next start reconciles it).
    pub trial: String,
    /// The newest failure with its typed reason.
    pub last_error: Option<Event>,
    /// Set when applying is paused on the device: what the pause is.
    pub paused: Option<String>,
    /// Why a newer release is not applied yet (not targeted, staged rollout, a hold).
    pub waiting: Option<String>,
}

/// Event kinds that say why a newer release waits.
const WAITING_KINDS: [&str; 3] = ["not-targeted", "rollout-wait", "held"];

/// Reads the status.
pub fn status(cfg: &Config) -> Result<Status, Failure> {
    std::fs::create_dir_all(&cfg.state_dir)?;
    let store = Store::open(&cfg.state_dir)?;
    let slots = Slots::open(&cfg.state_dir)?;
    let slot = slots.current()?;
    let applied = match slot {
        Some(s) => slots.read_record(s)?,
        None => None,
    };
    let previous = match slot {
        Some(s) => slots.read_record(s.other())?,
        None => None,
    };
    let last_apply = store.last_journal()?;
    let trial = match &last_apply {
        Some(e) if e.state.is_open() => e.state.as_str().to_string(),
        _ => "none".to_string(),
    };
    let now = crate::store::now();
    let paused = crate::hold::paused(&store, now)?.map(|until| crate::hold::Hold::Paused { until }.describe());
    let release = applied.as_ref().map(|r| r.release);
    let waiting = store
        .recent_events(100)?
        .into_iter()
        .find(|e| WAITING_KINDS.contains(&e.kind.as_str()) && e.release.is_some_and(|r| release.is_none_or(|a| r > a)))
        .map(|e| e.message);
    Ok(Status {
        device_id: cfg.device_id.clone(),
        channel: cfg.channel.to_string(),
        slot: slot.map(|s| s.to_string()),
        applied,
        previous,
        last_apply,
        trial,
        last_error: store.last_failure()?,
        paused,
        waiting,
    })
}

impl Status {
    /// The human form: one fact per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
        line("device", self.device_id.clone());
        line("channel", self.channel.clone());
        match (&self.applied, &self.slot) {
            (Some(r), Some(s)) => {
                line("release", r.release.to_string());
                line("commit", r.commit.clone());
                line("slot", s.clone());
                line("applied at", fmt_time(r.written_at));
            }
            _ => line("release", "none applied yet".into()),
        }
        if let Some(p) = &self.previous {
            line("previous", format!("release {} (rollback target)", p.release));
        }
        if let Some(p) = &self.paused {
            line("paused", p.clone());
        }
        if let Some(w) = &self.waiting {
            line("waiting", w.clone());
        }
        line("trial", self.trial.clone());
        if let Some(j) = &self.last_apply {
            line("last apply", format!("release {} {}", j.release, j.state.as_str()));
        }
        match &self.last_error {
            Some(e) => line(
                "last error",
                format!("{}: {} ({})", e.reason.as_deref().unwrap_or("?"), e.message, fmt_time(e.at)),
            ),
            None => line("last error", "none".into()),
        }
        out
    }
}

/// What `history` shows: apply attempts and events, newest first.
#[derive(Debug, Serialize)]
pub struct History {
    /// Apply attempts.
    pub applies: Vec<JournalEntry>,
    /// Events.
    pub events: Vec<Event>,
}

/// Reads the history.
pub fn history(cfg: &Config, limit: usize) -> Result<History, Failure> {
    std::fs::create_dir_all(&cfg.state_dir)?;
    let store = Store::open(&cfg.state_dir)?;
    Ok(History { applies: store.journal(limit)?, events: store.recent_events(limit)? })
}

impl History {
    /// The human form.
    pub fn render(&self) -> String {
        let mut out = String::from("applies (newest first):\n");
        for j in &self.applies {
            let why = match (&j.reason, &j.message) {
                (Some(r), Some(m)) => format!("  {r}: {m}"),
                _ => String::new(),
            };
            let from = j.from_slot.as_deref().unwrap_or("-");
            out.push_str(&format!(
                "  {}  release {:<5} {:<12} slot {from} -> {}{why}\n",
                fmt_time(j.started_at),
                j.release,
                j.state.as_str(),
                j.to_slot
            ));
        }
        out.push_str("events (newest first):\n");
        for e in &self.events {
            let release = e.release.map(|r| format!(" release {r}")).unwrap_or_default();
            let reason = e.reason.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default();
            out.push_str(&format!("  #{:<5} {}  {}{release}{reason}: {}\n", e.seq, fmt_time(e.at), e.kind, e.message));
        }
        out
    }
}

fn fmt_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}
