//! Reconciliation on every start, before anything else touches the state directory.
//!
//! `current` is the truth; the journal is brought in line with it:
//!
//! | last journal state       | `current` is…        | action                                      |
//! |--------------------------|----------------------|---------------------------------------------|
//! | started                  | (unchanged)          | aborted: a half-written slot is removed     |
//! | switching, trial         | the old slot / none  | aborted: the switch never happened          |
//! | switching, trial         | the new slot         | trial interrupted: count a boot; re-run the |
//! |                          |                      | hooks, or roll back once `trial_boots` hit  |
//! | rolling-back             | either               | finish the rollback                         |
//!
//! Stray temporaries (link temporaries, slot trash, record temporaries) and what an
//! interrupted pack import left in `objects/pack` are removed first.
//!
//! Aborting frees disk space before it writes to SQLite ([`abort`]): the apply may have
//! failed because the disk is full, and the journal cannot commit on a full disk. The
//! half-written inactive slot (one without a `.ferry-slot` record) is removed and the
//! object store pruned first; a slot with a record is a complete tree and stays (it may
//! be an operator rollback's target). [`crate::agent::Agent::apply`] aborts the same way
//! right after a failure; if even then SQLite cannot commit, the entry stays `started`
//! and the next start finishes the job here.

use ferry_proto::{ObjectFormat, Reason};

use crate::agent::Agent;
use crate::failure::Failure;
use crate::slots::SlotId;
use crate::store::{JournalEntry, JournalState};

/// Brings journal and slots in line with `current`.
pub fn reconcile(agent: &mut Agent) -> Result<(), Failure> {
    let removed = agent.slots.remove_stray_temporaries()?
        + remove_interrupted_imports(agent)?
        + agent.store.remove_stray_payload_files()?;
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
        JournalState::Started => abort(agent, &entry, Reason::Io, "interrupted while writing the slot"),
        JournalState::Switching | JournalState::Trial if current != to => {
            abort(agent, &entry, Reason::Io, "interrupted before the switch")
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

/// Closes the open entry `entry`, whose slot was never switched to, as `aborted` with
/// `reason` and `why`. Frees space first: removes the half-written slot and prunes, so that
/// the journal can commit on a disk the failed apply filled.
pub(crate) fn abort(agent: &Agent, entry: &JournalEntry, reason: Reason, why: &str) -> Result<(), Failure> {
    tracing::warn!(release = entry.release, "apply {why}; nothing was switched");
    agent.slots.remove_stray_temporaries()?;
    remove_partial_slot(agent, entry)?;
    agent.prune();
    agent.store.journal_set(entry.id, JournalState::Aborted, Some((reason, why)))?;
    agent.store.record_event("aborted", Some(entry.release), None, &format!("apply {why}"))?;
    Ok(())
}

/// Removes the slot the open entry `entry` was writing, unless it is active or complete
/// (has a record: a finished checkout, or the slot an operator rollback switches to).
/// Touches no SQLite.
fn remove_partial_slot(agent: &Agent, entry: &JournalEntry) -> Result<(), Failure> {
    let Ok(to) = entry.to_slot.parse::<SlotId>() else { return Ok(()) };
    // A record that does not parse is no complete tree either.
    if agent.slots.current()? == Some(to) || matches!(agent.slots.read_record(to), Ok(Some(_))) {
        return Ok(());
    }
    if std::fs::symlink_metadata(agent.slots.slot_path(to)).is_ok() {
        agent.slots.remove(to)?;
        tracing::info!(release = entry.release, slot = %to, "removed the half-written slot");
    }
    Ok(())
}
