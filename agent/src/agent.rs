//! The agent's engine: one [`Agent`] owns the state directory (under its lock), the SQLite
//! store, the object store, the slots and the trust root, and runs the apply protocol of
//! DESIGN "Apply" steps 1–7. Blocking throughout; the daemon calls it from its own thread.
//!
//! Opening an agent reconciles first (see [`crate::reconcile`]), so every mutation starts
//! from a state where `current` and the journal agree.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::manifest::PayloadRef;
use ferry_proto::{GitOid, ObjectFormat, Reason, ReleaseManifest, Sha256Digest, Verified, VerifiedRoot};

use crate::config::Config;
use crate::failure::Failure;
use crate::git::ObjectStore;
use crate::hooks::{HookEnv, HookLimits, HookOutcome};
use crate::lock::StateLock;
use crate::slots::{SlotId, SlotRecord, Slots};
use crate::store::{JournalEntry, JournalState, Store};

/// How long a command waits for another agent's apply to finish.
const LOCK_WAIT: Duration = Duration::from_secs(3600);

/// The engine, holding the state lock.
pub struct Agent {
    pub(crate) cfg: Config,
    pub(crate) store: Store,
    pub(crate) slots: Slots,
    pub(crate) root: VerifiedRoot,
    _lock: StateLock,
}

/// What an apply ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Switched, healthy, committed.
    Committed { release: u64, slot: SlotId },
    /// Switched, unhealthy, switched back; the release is refused from now on.
    RolledBack { release: u64, failure: Failure },
}

impl Agent {
    /// Takes the state lock, opens the store, loads trust and reconciles.
    pub fn open(cfg: Config) -> Result<Agent, Failure> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            Failure::new(Reason::Io, format!("creating state directory {}: {e}", cfg.state_dir.display()))
        })?;
        let lock = StateLock::acquire(&cfg.state_dir, LOCK_WAIT)?;
        let store = Store::open(&cfg.state_dir)?;
        let slots = Slots::open(&cfg.state_dir)?;
        let root = load_trust(&cfg, &store)?;
        let mut agent = Agent { cfg, store, slots, root, _lock: lock };
        crate::reconcile::reconcile(&mut agent)?;
        Ok(agent)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The trust root in force.
    pub fn root(&self) -> &VerifiedRoot {
        &self.root
    }

    /// Walks the trust root forward with roots from `fetch(n)`, persisting each new one.
    pub fn update_trust<E: std::fmt::Display>(
        &mut self,
        fetch: impl FnMut(u64) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<(), Failure> {
        let before = self.root.version();
        let walked = self.root.clone().walk(fetch, &self.cfg.limits)?;
        if walked.version() != before {
            self.store.put_root(walked.version(), walked.envelope_bytes())?;
            crate::freshness::after_rotation(&self.store, self.root.root(), walked.root())?;
            tracing::info!(from = before, to = walked.version(), "trust root rotated");
            self.store.record_event(
                "trust-rotated",
                None,
                None,
                &format!("trust root {before} -> {}", walked.version()),
            )?;
            self.root = walked;
        }
        Ok(())
    }

    /// The release in the active slot.
    pub fn applied(&self) -> Result<Option<(SlotId, SlotRecord)>, Failure> {
        let Some(slot) = self.slots.current()? else { return Ok(None) };
        Ok(self.slots.read_record(slot)?.map(|r| (slot, r)))
    }

    /// The object store for `format`; one format per device.
    pub(crate) fn objects(&self, format: ObjectFormat) -> Result<ObjectStore, Failure> {
        match self.store.setting("object_format")? {
            Some(f) if f != format.as_str() => {
                return Err(Failure::new(
                    Reason::Unsupported,
                    format!("release uses {format} objects but this device holds {f} objects"),
                ))
            }
            Some(_) => {}
            None => self.store.set_setting("object_format", format.as_str())?,
        }
        let kind = match format {
            ObjectFormat::Sha1 => gix_hash::Kind::Sha1,
            ObjectFormat::Sha256 => gix_hash::Kind::Sha256,
        };
        Ok(ObjectStore::open(&self.cfg.state_dir.join("objects"), kind)?)
    }

    /// True when the object store holds commit `id` (a usable delta base).
    pub fn holds_commit(&self, id: &GitOid) -> bool {
        // A query must not write: a device that never imported holds nothing, and
        // `objects()` would record its object format.
        if self.store.setting("object_format").ok().flatten().is_none() {
            return false;
        }
        let Ok(objects) = self.objects(id.format()) else { return false };
        gix_hash::ObjectId::from_hex(id.as_str().as_bytes()).map(|oid| objects.contains(&oid)).unwrap_or(false)
    }

    /// Step 1 (policy): channel, strictly newer than the applied release, expiry, labels,
    /// and not refused before.
    pub fn check_policy(&self, manifest: &ReleaseManifest) -> Result<(), Failure> {
        let applied = self.applied()?.map(|(_, r)| r.release);
        // Expiry is judged by the later of the clock and the newest signing time accepted,
        // as the service does: a clock set back must not revive an expired release.
        let now = crate::freshness::effective_now(crate::store::now(), &crate::freshness::seen(&self.store)?);
        manifest.check_policy(&self.cfg.channel, applied, now, &self.cfg.labels)?;
        if let Some((reason, message)) = self.store.refusal(manifest.channel.as_str(), manifest.release)? {
            return Err(Failure::new(
                Reason::Refused,
                format!("release {} was refused before ({reason}: {message}); not retried", manifest.release),
            ));
        }
        Ok(())
    }

    /// Records a rejection as an event and returns it.
    pub fn reject(&self, release: Option<u64>, failure: Failure) -> Failure {
        tracing::warn!(release, reason = %failure.reason, "{}", failure.message);
        if let Err(e) = self.store.record_event("rejected", release, Some(failure.reason), &failure.message) {
            tracing::error!("could not record the rejection: {e}");
        }
        failure
    }

    /// Steps 2–7: imports the verified payload (already stored and digest-checked), checks
    /// the tree, writes the inactive slot, switches, runs the hooks, and commits or rolls back.
    pub fn apply(
        &mut self,
        manifest: &Verified<ReleaseManifest>,
        payload: &PayloadRef,
    ) -> Result<ApplyOutcome, Failure> {
        let result = self.apply_verified(manifest, payload);
        if let Err(failure) = &result {
            self.clean_up_failed_apply(failure);
        }
        result
    }

    /// After a failed apply: nothing half-applied may stay, and the journal entry it opened
    /// must not stay open until the next start. The failure may be a full disk, so space
    /// comes back before anything writes to SQLite: the half-written inactive slot is
    /// removed, then what the refused release left in the object store is pruned, and only
    /// then is the entry closed as `aborted` with the failure's reason. What cannot be done
    /// now (SQLite still out of room) the next start's reconcile finishes.
    fn clean_up_failed_apply(&mut self, failure: &Failure) {
        let started = match self.store.last_journal() {
            Ok(entry) => entry.filter(|e| e.state == JournalState::Started),
            Err(e) => {
                tracing::error!("reading the journal after a failed apply: {e}");
                None
            }
        };
        if let Some(entry) = &started {
            let why = format!("failed: {}: {}", failure.reason, failure.message);
            if let Err(e) = crate::reconcile::abort(self, entry, failure.reason, &why) {
                tracing::error!("closing the journal after a failed apply (the next start does): {e}");
            }
        }
        // Anything else still open (a failure after the switch) is reconciled as on a start.
        if let Err(e) = crate::reconcile::reconcile(self) {
            tracing::error!("reconciling after a failed apply: {e}");
        }
        if started.is_none() {
            // Drop what a refused release left in the object store (`abort` already did).
            self.prune();
        }
    }

    fn apply_verified(
        &mut self,
        manifest: &Verified<ReleaseManifest>,
        payload: &PayloadRef,
    ) -> Result<ApplyOutcome, Failure> {
        self.check_policy(manifest)?;
        if !self.store.payload_verified(&payload.sha256)? {
            return Err(Failure::new(Reason::DigestMismatch, "payload is not stored and verified"));
        }
        // Step 2: import.
        let objects = self.objects(manifest.object_format)?;
        self.import(&objects, manifest, payload)?;
        let snapshot = to_oid(&manifest.snapshot_commit)?;
        let tree = objects.commit_tree(&snapshot)?;
        if tree != to_oid(&manifest.snapshot_tree)? {
            return Err(Failure::new(
                Reason::DigestMismatch,
                format!(
                    "snapshot {} has tree {tree}, the manifest signed {}",
                    manifest.snapshot_commit, manifest.snapshot_tree
                ),
            ));
        }
        // Step 3: validate the whole tree before writing anything.
        let validated = crate::git::validate_tree(&objects, &tree, &self.cfg.git_limits)?;
        crate::crash_point!("apply::after-validate");

        let record = SlotRecord {
            release: manifest.release,
            commit: manifest.snapshot_commit.to_string(),
            tree: manifest.snapshot_tree.to_string(),
            channel: manifest.channel.to_string(),
            written_at: 0,
        };
        self.install(&objects, &validated, record, manifest.digest().to_hex())
    }

    /// Steps 4–7 for a validated tree: write the inactive slot, journal, switch, trial.
    fn install(
        &mut self,
        objects: &ObjectStore,
        validated: &crate::git::ValidatedTree,
        mut record: SlotRecord,
        manifest_digest: String,
    ) -> Result<ApplyOutcome, Failure> {
        // Step 4: the inactive slot.
        let from = self.slots.current()?;
        let to = self.slots.inactive()?;
        let journal_id = self.store.journal_start(&JournalEntry {
            id: 0,
            channel: record.channel.clone(),
            release: record.release,
            commit: record.commit.clone(),
            manifest: manifest_digest,
            from_slot: from.map(|s| s.to_string()),
            to_slot: to.to_string(),
            state: JournalState::Started,
            boots: 0,
            reason: None,
            message: None,
            started_at: 0,
            updated_at: 0,
        })?;
        let (stats, how) = match self.intact_tree_of(objects, to) {
            Some(old) => {
                self.slots.discard_record(to)?;
                crate::crash_point!("apply::after-discard");
                (crate::git::update(objects, &old, validated, &self.slots.slot_path(to))?, "updated in place")
            }
            None => {
                let dir = self.slots.prepare_empty(to)?;
                crate::crash_point!("apply::after-prepare");
                (crate::git::checkout(objects, validated, &dir)?, "written whole")
            }
        };
        crate::crash_point!("apply::after-checkout");
        record.written_at = crate::store::now();
        self.slots.write_record(to, &record)?;
        if let Some(ctime) = self.slots.record_ctime(to)? {
            self.store.set_setting(&record_stamp_key(to), &record_stamp(ctime))?;
        }
        tracing::info!(release = record.release, slot = %to, files = stats.files, bytes = stats.bytes,
            removed = stats.removed, "slot {how}");
        crate::crash_point!("apply::after-record");

        // Step 5: journal, then switch.
        self.store.journal_set(journal_id, JournalState::Switching, None)?;
        crate::crash_point!("apply::before-switch");
        self.slots.switch_to(to)?;
        self.store.journal_set(journal_id, JournalState::Trial, None)?;
        self.store.record_event("switched", Some(record.release), None, &format!("current -> slot {to}"))?;
        crate::crash_point!("apply::after-switch");

        // Steps 6–7.
        let outcome = self.trial(journal_id)?;
        if matches!(outcome, ApplyOutcome::Committed { .. }) {
            self.prune();
        }
        Ok(outcome)
    }

    /// The tree slot `slot` holds, validated, when the slot can be updated in place: it has a
    /// record, the very record this agent wrote (its ctime is the one noted in SQLite when it
    /// was written, so whoever can write into the slot cannot refresh it to cover a change),
    /// the record's tree is in the store and the slot is exactly that tree, unchanged since
    /// the record was written ([`crate::git::check_intact`]). `None` sends the apply down the
    /// full checkout; why is logged.
    fn intact_tree_of(&self, objects: &ObjectStore, slot: SlotId) -> Option<crate::git::ValidatedTree> {
        let found = || -> Result<Option<crate::git::ValidatedTree>, Failure> {
            let (Some(record), Some(since)) = (self.slots.read_record(slot)?, self.slots.record_ctime(slot)?) else {
                return Ok(None);
            };
            if self.store.setting(&record_stamp_key(slot))?.as_deref() != Some(record_stamp(since).as_str()) {
                tracing::info!(%slot, release = record.release,
                    "slot cannot be updated in place: its record is not the one this agent wrote");
                return Ok(None);
            }
            let started = std::time::Instant::now();
            let tree: GitOid = record.tree.parse().map_err(|e| Failure::new(Reason::Malformed, e))?;
            let tree = crate::git::validate_tree(objects, &to_oid(&tree)?, &self.cfg.git_limits)?;
            let validated = started.elapsed();
            match crate::git::check_intact(&tree, &self.slots.slot_path(slot), since) {
                Ok(()) => {
                    tracing::debug!(%slot, release = record.release, ?validated, took = ?started.elapsed(),
                        "slot holds its release untouched");
                    Ok(Some(tree))
                }
                Err(changed) => {
                    tracing::info!(%slot, release = record.release, "slot cannot be updated in place: {changed}");
                    Ok(None)
                }
            }
        };
        found().unwrap_or_else(|e| {
            tracing::info!(%slot, "slot cannot be updated in place: its tree cannot be read: {e}");
            None
        })
    }

    /// Compares the active slot with its release tree. Read-only.
    pub fn drift(&self) -> Result<Option<(SlotRecord, Vec<crate::git::DriftEntry>)>, Failure> {
        let Some((slot, record)) = self.applied()? else { return Ok(None) };
        let tree: GitOid = record.tree.parse().map_err(|e| Failure::new(Reason::Malformed, e))?;
        let objects = self.objects(tree.format())?;
        let validated = crate::git::validate_tree(&objects, &to_oid(&tree)?, &self.cfg.git_limits)?;
        let entries = crate::git::diff_dir_against_tree(&objects, &validated, &self.slots.slot_path(slot))?;
        Ok(Some((record, entries)))
    }

    /// Restores a drifted active slot: the same release is written afresh into the
    /// inactive slot and switched to, through the whole protocol (journal, hooks).
    pub fn restore_drift(&mut self) -> Result<ApplyOutcome, Failure> {
        let (_, record) =
            self.applied()?.ok_or_else(|| Failure::new(Reason::Io, "no release is applied; nothing to restore"))?;
        let tree: GitOid = record.tree.parse().map_err(|e| Failure::new(Reason::Malformed, e))?;
        let objects = self.objects(tree.format())?;
        let validated = crate::git::validate_tree(&objects, &to_oid(&tree)?, &self.cfg.git_limits)?;
        self.store.record_event(
            "drift-restore",
            Some(record.release),
            None,
            "re-writing the release into the other slot",
        )?;
        self.install(&objects, &validated, record, String::new())
    }

    fn import(&self, objects: &ObjectStore, manifest: &ReleaseManifest, payload: &PayloadRef) -> Result<(), Failure> {
        let reader = Box::new(self.store.payload_reader(&payload.sha256)?);
        let (header, mut stream) = ferry_proto::payload::open_bundle(reader, payload.size, &self.cfg.limits)?;
        manifest.check_bundle(payload, &header)?;
        let prerequisites = header.prerequisites.iter().map(to_oid).collect::<Result<Vec<_>, _>>()?;
        let outcome = objects.import_pack(&mut stream, &prerequisites, &self.cfg.git_limits).map_err(|e| {
            // A zstd bomb shows up as an I/O error from the capped reader.
            let f = Failure::from(e);
            if f.message.contains("exceeds the") && f.message.contains("limit") {
                Failure::new(Reason::SizeExceeded, f.message)
            } else {
                f
            }
        })?;
        tracing::info!(
            release = manifest.release,
            objects = outcome.objects_written,
            bytes = outcome.bytes_read,
            "pack imported"
        );
        crate::crash_point!("apply::after-import");
        Ok(())
    }

    /// Steps 6–7 for the journal entry `id`, whose slot is now `current`.
    pub(crate) fn trial(&mut self, id: i64) -> Result<ApplyOutcome, Failure> {
        let entry = self
            .store
            .journal(64)?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| Failure::new(Reason::Io, format!("journal entry {id} vanished")))?;
        let to: SlotId = entry.to_slot.parse().map_err(|e| Failure::new(Reason::Io, e))?;
        let env = self.hook_env(&entry, to);
        let spec = crate::hooks::load(&self.slots.slot_path(to));
        let limits = self.hook_limits();
        let result = spec.map_err(Failure::from).and_then(|spec| {
            let activate = crate::hooks::run_activate(&spec, &env, &limits)?;
            if !activate.is_ok() {
                return Err(hook_failure(Reason::ActivateFailed, "activate", &activate));
            }
            crate::crash_point!("apply::before-health");
            let health = crate::hooks::run_health(&spec, &env, &limits)?;
            if !health.is_ok() {
                return Err(hook_failure(Reason::HealthFailed, "health check", &health));
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.store.journal_set(id, JournalState::Committed, None)?;
                crate::crash_point!("apply::after-commit");
                self.store.record_event(
                    "applied",
                    Some(entry.release),
                    None,
                    &format!("release {} healthy in slot {to}", entry.release),
                )?;
                tracing::info!(release = entry.release, slot = %to, "release committed");
                Ok(ApplyOutcome::Committed { release: entry.release, slot: to })
            }
            Err(failure) => {
                tracing::warn!(release = entry.release, reason = %failure.reason, "{}; rolling back", failure.message);
                self.roll_back(&entry, failure.clone())?;
                Ok(ApplyOutcome::RolledBack { release: entry.release, failure })
            }
        }
    }

    /// Switches back from a failed trial, runs the hooks, journals `rolled-back` and
    /// refuses the release.
    pub(crate) fn roll_back(&mut self, entry: &JournalEntry, failure: Failure) -> Result<(), Failure> {
        self.store.journal_set(entry.id, JournalState::RollingBack, Some((failure.reason, &failure.message)))?;
        crate::crash_point!("apply::rollback::before-switch");
        let from: Option<SlotId> = entry.from_slot.as_deref().and_then(|s| s.parse().ok());
        let failed: SlotId = entry.to_slot.parse().map_err(|e| Failure::new(Reason::Io, e))?;
        match from {
            Some(slot) if self.slots.read_record(slot)?.is_some() => self.slots.switch_to(slot)?,
            _ => self.slots.clear_current()?,
        }
        crate::crash_point!("apply::rollback::after-switch");
        let limits = self.hook_limits();
        // The failed release's rollback hook undoes what its activate did…
        if let Ok(spec) = crate::hooks::load(&self.slots.slot_path(failed)) {
            let outcome = crate::hooks::run_rollback(&spec, &self.hook_env(entry, failed), &limits)?;
            if !outcome.is_ok() {
                tracing::warn!(release = entry.release, "rollback hook {outcome}");
            }
        }
        // …and the restored release is activated again.
        if let Some(slot) = from {
            if let Some(record) = self.slots.read_record(slot)? {
                let env = HookEnv {
                    release: record.release,
                    commit: record.commit.clone(),
                    slot: slot.to_string(),
                    previous_slot: Some(failed.to_string()),
                    slot_path: self.slots.slot_path(slot),
                    channel: record.channel.clone(),
                };
                if let Ok(spec) = crate::hooks::load(&self.slots.slot_path(slot)) {
                    let outcome = crate::hooks::run_activate(&spec, &env, &limits)?;
                    if !outcome.is_ok() {
                        tracing::error!(release = record.release, "re-activating the restored release {outcome}");
                    }
                }
            }
        }
        crate::crash_point!("apply::rollback::after-hooks");
        // The failed tree stays on disk for inspection but is no longer a release.
        self.slots.discard_record(failed)?;
        crate::crash_point!("apply::rollback::after-discard");
        self.store.journal_set(entry.id, JournalState::RolledBack, None)?;
        crate::crash_point!("apply::rollback::before-refuse");
        self.store.refuse(&entry.channel, entry.release, failure.reason, &failure.message)?;
        self.store.record_event("rolled-back", Some(entry.release), Some(failure.reason), &failure.message)?;
        tracing::warn!(release = entry.release, "rolled back; release refused from now on");
        Ok(())
    }

    /// Operator-requested rollback to the other slot, through the same protocol: journal,
    /// switch, hooks; the release rolled away from is refused.
    pub fn manual_rollback(&mut self) -> Result<ApplyOutcome, Failure> {
        let (current, record) =
            self.applied()?.ok_or_else(|| Failure::new(Reason::Io, "no release is applied; nothing to roll back"))?;
        let target = current.other();
        let target_record = self.slots.read_record(target)?.ok_or_else(|| {
            Failure::new(Reason::Io, format!("slot {target} holds no complete release; nothing to roll back to"))
        })?;
        let id = self.store.journal_start(&JournalEntry {
            id: 0,
            channel: target_record.channel.clone(),
            release: target_record.release,
            commit: target_record.commit.clone(),
            manifest: String::new(),
            from_slot: Some(current.to_string()),
            to_slot: target.to_string(),
            state: JournalState::Started,
            boots: 0,
            reason: Some("operator".into()),
            message: Some(format!("operator rollback from release {}", record.release)),
            started_at: 0,
            updated_at: 0,
        })?;
        self.store.refuse(&record.channel, record.release, Reason::Refused, "rolled back by the operator")?;
        self.store.record_event(
            "operator-rollback",
            Some(record.release),
            None,
            &format!("operator rollback from release {} to {}", record.release, target_record.release),
        )?;
        self.store.journal_set(id, JournalState::Switching, None)?;
        self.slots.switch_to(target)?;
        self.store.journal_set(id, JournalState::Trial, None)?;
        self.trial(id)
    }

    fn hook_env(&self, entry: &JournalEntry, slot: SlotId) -> HookEnv {
        HookEnv {
            release: entry.release,
            commit: entry.commit.clone(),
            slot: slot.to_string(),
            previous_slot: entry.from_slot.clone().filter(|s| s != &slot.to_string()),
            slot_path: self.slots.slot_path(slot),
            channel: entry.channel.clone(),
        }
    }

    fn hook_limits(&self) -> HookLimits {
        HookLimits { max_timeout: self.cfg.max_hook_timeout, ..HookLimits::default() }
    }

    /// Drops cached payloads of releases at or below the applied one, and git objects no
    /// slot needs. Failures are logged, never fatal: pruning is housekeeping.
    pub(crate) fn prune(&self) {
        if let Err(e) = self.try_prune() {
            tracing::warn!("pruning: {e}");
        }
    }

    fn try_prune(&self) -> Result<(), Failure> {
        let Some((_, applied)) = self.applied()? else { return Ok(()) };
        // Objects first: deleting files needs no free space, and a full disk may refuse the
        // SQLite commit that drops payload rows.
        self.prune_objects()?;
        for digest in self.store.payload_digests()? {
            let release = self.payload_release(&digest)?;
            if release.is_none_or(|r| r <= applied.release) {
                self.store.delete_payload(&digest)?;
            }
        }
        Ok(())
    }

    /// Drops git objects no slot's release needs.
    fn prune_objects(&self) -> Result<(), Failure> {
        let mut keep = Vec::new();
        for slot in [SlotId::A, SlotId::B] {
            if let Some(r) = self.slots.read_record(slot)? {
                if let Ok(id) = gix_hash::ObjectId::from_hex(r.commit.as_bytes()) {
                    keep.push(id);
                }
            }
        }
        let format = match self.store.setting("object_format")?.as_deref() {
            Some("sha256") => ObjectFormat::Sha256,
            _ => ObjectFormat::Sha1,
        };
        let outcome = self.objects(format)?.prune(&keep)?;
        tracing::debug!(?outcome, "pruned object store");
        Ok(())
    }

    fn payload_release(&self, digest: &Sha256Digest) -> Result<Option<u64>, Failure> {
        Ok(self.store.payload_manifest_release(digest)?)
    }

    /// Labels (for messages).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.cfg.labels
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.cfg.state_dir.clone()
    }
}

/// The setting noting the ctime of the record the agent last wrote into `slot`.
fn record_stamp_key(slot: SlotId) -> String {
    format!("slot.{slot}.record_ctime")
}

/// A ctime as the setting holds it: seconds, a dot, nine digits of nanoseconds.
fn record_stamp((secs, nanos): crate::git::Ctime) -> String {
    format!("{secs}.{nanos:09}")
}

fn hook_failure(reason: Reason, what: &str, outcome: &HookOutcome) -> Failure {
    let tail = match outcome {
        HookOutcome::Failed { output_tail, .. } | HookOutcome::TimedOut { output_tail, .. } => output_tail.trim(),
        HookOutcome::Ok => "",
    };
    let last_line = tail.lines().last().unwrap_or("");
    if last_line.is_empty() {
        Failure::new(reason, format!("{what} {outcome}"))
    } else {
        Failure::new(reason, format!("{what} {outcome}: {last_line}"))
    }
}

/// Parses a manifest object id into a gix id.
pub(crate) fn to_oid(id: &GitOid) -> Result<gix_hash::ObjectId, Failure> {
    gix_hash::ObjectId::from_hex(id.as_str().as_bytes())
        .map_err(|e| Failure::new(Reason::Malformed, format!("object id {id}: {e}")))
}

/// The provisioned root, walked forward through the roots stored from earlier updates.
pub(crate) fn load_trust(cfg: &Config, store: &Store) -> Result<VerifiedRoot, Failure> {
    let bytes = std::fs::read(&cfg.trust_root).map_err(|e| {
        Failure::new(Reason::TrustRoot, format!("reading trust root {}: {e}", cfg.trust_root.display()))
    })?;
    let provisioned = VerifiedRoot::provisioned(&bytes, &cfg.limits)
        .map_err(|e| Failure::from(e).context(format!("trust root {}", cfg.trust_root.display())))?;
    let stored = store.roots_after(provisioned.version())?;
    let mut by_version: BTreeMap<u64, Vec<u8>> = stored.into_iter().collect();
    let walk_limits = ferry_proto::Limits { max_roots_walked: u64::MAX / 2, ..cfg.limits.clone() };
    Ok(provisioned.walk(|n| Ok::<_, String>(by_version.remove(&n)), &walk_limits)?)
}
