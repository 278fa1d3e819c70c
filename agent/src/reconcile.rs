//! Reconciliation on every start, before anything else touches the state directory.
//!
//! `current` is the truth; the journal is brought in line with it:
//!
//! | last journal state       | `current` is…        | action                                      |
//! |--------------------------|----------------------|---------------------------------------------|
//! | started                  | (unchanged)          | aborted: the inactive slot is simply stale  |
//! | switching, trial         | the old slot / none  | aborted: the switch never happened          |
//! | switching, trial         | the new slot         | trial interrupted: count a boot; re-run the |
//! |                          |                      | hooks, or roll back once `trial_boots` hit  |
//! | rolling-back             | either               | finish the rollback                         |
//!
//! Stray temporaries (link temporaries, slot trash, record temporaries) and what an
//! interrupted pack import left in `objects/pack` are removed first.

use ferry_proto::{ObjectFormat, Reason};

use crate::agent::Agent;
use crate::failure::Failure;
use crate::slots::SlotId;
use crate::store::JournalState;

/// Brings journal and slots in line with `current`.
pub fn reconcile(agent: &mut Agent) -> Result<(), Failure> {
    let removed = agent.slots.remove_stray_temporaries()? + remove_interrupted_imports(agent)?;
    if removed > 0 {
        tracing::info!(removed, "removed stray temporaries");
    }
    let Some(entry) = agent.store.last_journal()? else { return Ok(()) };
    if !entry.state.is_open() {
        return Ok(());
    }
    let current = agent.slots.current()?;
    let to: Option<SlotId> = entry.to_slot.parse().ok();
    match entry.state {
        JournalState::Started => abort(agent, entry.id, entry.release, "interrupted while writing the slot"),
        JournalState::Switching | JournalState::Trial if current != to => {
            abort(agent, entry.id, entry.release, "interrupted before the switch")
        }
        JournalState::Switching | JournalState::Trial => {
            let boots = agent.store.journal_add_boot(entry.id)?;
            if boots >= agent.cfg.trial_boots {
                let failure = Failure::new(
                    Reason::HealthFailed,
                    format!("trial of release {} was interrupted {boots} times", entry.release),
                );
                agent.roll_back(&entry, failure)
            } else {
                tracing::warn!(release = entry.release, boots, "trial was interrupted; checking health again");
                agent.store.journal_set(entry.id, JournalState::Trial, None)?;
                agent.trial(entry.id).map(|_| ())
            }
        }
        JournalState::RollingBack => {
            let failure = Failure::new(
                entry.reason.as_deref().and_then(Reason::from_code).unwrap_or(Reason::HealthFailed),
                entry.message.clone().unwrap_or_else(|| "rollback was interrupted".into()),
            );
            agent.roll_back(&entry, failure)
        }
        JournalState::Committed | JournalState::RolledBack | JournalState::Aborted => Ok(()),
    }
}

/// Removes gix temporaries and packs still marked `.keep` from `objects/pack`: the import
/// that wrote them never finished, so nothing journaled needs them. Left in place, a `.keep`
/// pack would stay for ever: re-importing the same payload finds the pack present and
/// writes nothing, so the import that would have removed the mark never does.
fn remove_interrupted_imports(agent: &Agent) -> Result<usize, Failure> {
    // No object format recorded: nothing was ever imported.
    let Some(format) = agent.store.setting("object_format")? else { return Ok(0) };
    let format: ObjectFormat = format.parse().map_err(|e| Failure::new(Reason::Io, format!("state database: {e}")))?;
    Ok(agent.objects(format)?.remove_interrupted_imports()?)
}

fn abort(agent: &Agent, id: i64, release: u64, why: &str) -> Result<(), Failure> {
    tracing::warn!(release, "apply {why}; nothing was switched");
    agent.store.journal_set(id, JournalState::Aborted, Some((Reason::Io, why)))?;
    agent.store.record_event("aborted", Some(release), None, &format!("apply {why}"))?;
    Ok(())
}
