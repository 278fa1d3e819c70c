//! Drift: the active slot compared with its release tree (on the daemon's timer and with
//! `ferry-agent status --verify`). Drift is recorded as an event with the changed paths,
//! counted in the metrics, and restored when the config says so: the same release is
//! written afresh into the other slot and switched to through the whole apply protocol
//! (so the rollback target is replaced by the clean copy).

use crate::agent::{Agent, ApplyOutcome};
use crate::config::Config;
use crate::failure::Failure;
use crate::git::DriftEntry;
use crate::metrics::{self, Metric};

/// What a drift check found and did.
#[derive(Debug)]
pub struct DriftReport {
    /// The release checked, if any is applied.
    pub release: Option<u64>,
    /// Paths that differ.
    pub entries: Vec<DriftEntry>,
    /// Whether the slot was restored.
    pub restored: bool,
}

/// Compares the active slot with its release; records drift and restores it when
/// configured to.
pub fn check(cfg: &Config) -> Result<DriftReport, Failure> {
    let mut agent = Agent::open(cfg.clone())?;
    let Some((record, entries)) = agent.drift()? else {
        return Ok(DriftReport { release: None, entries: vec![], restored: false });
    };
    metrics::set(agent.store(), Metric::DriftPaths, entries.len() as u64)?;
    if entries.is_empty() {
        return Ok(DriftReport { release: Some(record.release), entries, restored: false });
    }
    let list: Vec<String> = entries.iter().take(20).map(|e| format!("{} ({})", e.path.display(), e.kind)).collect();
    let more = if entries.len() > 20 { format!(" and {} more", entries.len() - 20) } else { String::new() };
    let message =
        format!("{} path(s) differ from release {}: {}{more}", entries.len(), record.release, list.join(", "));
    tracing::warn!(release = record.release, paths = entries.len(), "drift: {message}");
    agent.store().record_event("drift", Some(record.release), None, &message)?;
    let mut restored = false;
    if cfg.drift_restore {
        match agent.restore_drift()? {
            ApplyOutcome::Committed { .. } => {
                metrics::set(agent.store(), Metric::DriftPaths, 0)?;
                restored = true;
            }
            // The clean copy failed its health check: switched back to the drifted slot.
            ApplyOutcome::RolledBack { failure, .. } => {
                tracing::warn!(release = record.release, "drift restore rolled back: {failure}");
            }
        }
    }
    Ok(DriftReport { release: Some(record.release), entries, restored })
}
