//! One poll cycle: for each mirror in order, until one works —
//!
//! 1. walk the trust root forward through `trust/root.<n>`;
//! 2. fetch the channel index conditionally (ETag), verify it, check channel, version
//!    (never below the highest seen) and expiry (judged by [`crate::freshness`]);
//! 3. if it names a release newer than the applied one: fetch its manifest by digest,
//!    verify it and check policy (its not-after judged by the later of the clock, the
//!    latest signing time seen and this index's); a release not for this device, or
//!    refused before, or not yet rolled out to it (or halted), leaves the device converged
//!    where it is;
//! 4. choose the smallest usable payload (a delta whose base is held, else the full one),
//!    download it into the store with resume, hash what was stored. A transfer below the
//!    minimum rate (`[fetch] min_rate`, the slow-retrieval defence) gives the mirror up at
//!    once, keeping what arrived, and only attempts at that rate count as progress that
//!    earns more retries. If the store refuses a
//!    chunk, another ferry-agent (an import) took the payload over: wait for its state lock,
//!    then use what it did (verified, or applied) or resume from what it left;
//! 5. unless a hold (a pause, or outside the maintenance windows) makes it wait — it is then
//!    remembered as pending, so it is applied when the hold ends even with no mirror in
//!    reach —, apply it through the engine, under the state lock, on a blocking thread; a
//!    release applied meanwhile by an import is convergence, not a rejection.
//!
//! A mirror that fails (network, verification, too slow) is reported and the next one is tried.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::manifest::{PayloadKind, PayloadRef};
use ferry_proto::{layout, Reason, ReleaseManifest, Sha256Digest, Verified, VerifiedRoot};

use super::sink::StoreSink;
use super::source::Source;
use crate::agent::{Agent, ApplyOutcome};
use crate::config::Config;
use crate::failure::Failure;
use crate::fetch::{Conditional, Resume};
use crate::hold::{self, Hold};
use crate::lock::StateLock;
use crate::metrics::{self, Metric};
use crate::store::Store;

/// Settings key: the last release reported as not targeted at this device.
const NOT_TARGETED_KEY: &str = "not_targeted_release";

/// Settings key: the last rollout decision reported (release and what the index said).
const ROLLOUT_KEY: &str = "rollout_reported";

/// Longest wait for another ferry-agent (an import) that took over a payload being downloaded.
const LOCK_WAIT: Duration = Duration::from_secs(3600);

/// How a cycle ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cycle {
    /// Nothing newer to apply; the device runs this release (if any).
    Converged { release: Option<u64>, note: Option<String> },
    /// A release was applied and committed.
    Applied { release: u64 },
    /// A release was applied, failed its trial and was rolled back.
    RolledBack { release: u64, failure: Failure },
    /// A release is downloaded and verified, and waits for a hold to end.
    Held { release: Option<u64>, pending: u64, hold: Hold },
}

/// Shared counters a cycle adds to.
#[derive(Debug, Default)]
pub struct Counters {
    /// Payload bytes received.
    pub downloaded: AtomicU64,
    /// Retried attempts.
    pub retries: AtomicU64,
    /// True while an apply runs: the service loop must not cut the cycle then (an apply
    /// is never abandoned midway), so a signal waits for the outcome.
    pub applying: AtomicBool,
}

/// Runs one cycle over all mirrors.
pub async fn run(
    cfg: &Config,
    sources: &[Source],
    counters: &Arc<Counters>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<Cycle, Failure> {
    let mut last: Option<Failure> = None;
    let mut tried = 0;
    for source in sources {
        if !source.is_present() {
            tracing::debug!(mirror = %source.key(), "mirror not present; skipped");
            continue;
        }
        tried += 1;
        match one_mirror(cfg, source, counters, shutdown).await {
            Ok(c) => return Ok(c),
            Err(f) => {
                tracing::warn!(mirror = %source.key(), reason = %f.reason, "{}", f.message);
                record(cfg, |s| {
                    s.record_event("mirror-failed", None, Some(f.reason), &format!("{}: {}", source.key(), f.message))
                });
                last = Some(f.context(source.key()));
            }
        }
    }
    // No mirror in reach (a device fed by USB sticks, or a link down): a release held
    // earlier, by this loop or by an import, is applied once its hold ends. A mirror that
    // answers decides instead (its index may have halted the rollout meanwhile).
    if let Some(c) = super::pending::apply_if_due(cfg, counters).await? {
        return Ok(c);
    }
    Err(last.unwrap_or_else(|| {
        let why = if tried == 0 { "no mirror is configured or present" } else { "no mirror answered" };
        Failure::new(Reason::Io, why)
    }))
}

fn record(cfg: &Config, f: impl FnOnce(&Store) -> Result<i64, crate::store::StoreError>) {
    let result = tokio::task::block_in_place(|| Store::open(&cfg.state_dir).and_then(|s| f(&s)));
    if let Err(e) = result {
        tracing::error!("recording an event: {e}");
    }
}

async fn one_mirror(
    cfg: &Config,
    source: &Source,
    counters: &Arc<Counters>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<Cycle, Failure> {
    let limits = &cfg.limits;
    let mut store = tokio::task::block_in_place(|| Store::open(&cfg.state_dir))?;

    // Step 1: trust.
    let mut root = tokio::task::block_in_place(|| crate::agent::load_trust(cfg, &store))?;
    let before = root.root().clone();
    for _ in 0..limits.max_roots_walked {
        let n = root.version() + 1;
        match source.get_optional(&layout::root_path(n), limits.max_envelope).await? {
            None => break,
            Some(bytes) => {
                root = root.rotate(&bytes, limits)?;
                let r = &root;
                tokio::task::block_in_place(|| store.put_root(r.version(), r.envelope_bytes()))?;
            }
        }
    }
    if root.version() != before.version {
        tracing::info!(from = before.version, to = root.version(), "trust root rotated");
        let after = root.root();
        if tokio::task::block_in_place(|| crate::freshness::after_rotation(&store, &before, after))? {
            tracing::info!("the index keys were replaced: index versions seen under the old keys are forgotten");
        }
    }

    // Step 2: the channel index.
    let index_rel = layout::index_path(&cfg.channel);
    let key = source.key();
    let cached = tokio::task::block_in_place(|| store.mirror_state(&key, &index_rel))?;
    let etag = cached.as_ref().and_then(|(e, _)| e.clone());
    let (bytes, etag) = match source.get_conditional(&index_rel, etag.as_deref(), limits.max_envelope).await? {
        Conditional::NotModified => match cached {
            Some((etag, body)) => (body, etag),
            None => return Err(Failure::new(Reason::Malformed, "304 Not Modified for an index never fetched")),
        },
        Conditional::Body { bytes, etag } => (bytes, etag),
    };
    let index = root.verify_index(&bytes, limits)?;
    let now = tokio::task::block_in_place(|| {
        crate::freshness::check_index(&store, &index, &cfg.channel, crate::store::now())
    })?;
    tokio::task::block_in_place(|| -> Result<(), Failure> {
        crate::freshness::record(&store, &index)?;
        store.set_mirror_state(&key, &index_rel, etag.as_deref(), &bytes)?;
        Ok(())
    })?;
    // The verified index's signing time is evidence of the time too: a clock behind it (or
    // at 1970 after a boot without one) must not make a release past its not-after acceptable.
    let now = now.max(index.created);

    // Step 3: is there anything newer?
    let applied = applied_release(cfg)?;
    let Some(latest) = index.latest.clone() else {
        return Ok(Cycle::Converged { release: applied, note: Some("the channel has no release yet".into()) });
    };
    if applied.is_some_and(|a| latest.release <= a) {
        return Ok(Cycle::Converged { release: applied, note: None });
    }
    if let Some((reason, _)) = tokio::task::block_in_place(|| store.refusal(cfg.channel.as_str(), latest.release))? {
        let note = format!("release {} was refused before ({reason}); waiting for a newer one", latest.release);
        return Ok(Cycle::Converged { release: applied, note: Some(note) });
    }
    let manifest = fetch_manifest(source, &root, &latest.manifest_sha256, cfg).await?;
    if manifest.release != latest.release || manifest.channel != cfg.channel {
        return Err(Failure::new(Reason::DigestMismatch, "the index and the manifest it names disagree"));
    }
    if let Err(e) = manifest.check_policy(&cfg.channel, applied, now, &cfg.labels) {
        let f = Failure::from(e);
        if f.reason == Reason::NotTargeted {
            // Reported once per release, not on every poll.
            let release = manifest.release.to_string();
            tokio::task::block_in_place(|| {
                store.record_event_once(
                    NOT_TARGETED_KEY,
                    &release,
                    "not-targeted",
                    Some(manifest.release),
                    Some(f.reason),
                    &f.message,
                )
            })?;
            return Ok(Cycle::Converged { release: applied, note: Some(f.message) });
        }
        return Err(f);
    }
    let admission = ferry_proto::rollout::admission(&index, &cfg.device_id, manifest.release);
    if let Some(note) = admission.describe(manifest.release) {
        // Reported once per release and rollout state, not on every poll.
        let state = format!("{}:{admission:?}", manifest.release);
        tokio::task::block_in_place(|| -> Result<(), Failure> {
            if store.record_event_once(ROLLOUT_KEY, &state, "rollout-wait", Some(manifest.release), None, &note)? {
                tracing::info!(release = manifest.release, "{note}");
            }
            super::pending::forget(&store)?;
            Ok(())
        })?;
        return Ok(Cycle::Converged { release: applied, note: Some(note) });
    }

    // Step 4: the payload.
    let payload = choose_payload(cfg, &manifest)?;
    let manifest_digest = manifest.digest();
    tokio::task::block_in_place(|| {
        store.put_manifest(&manifest_digest, manifest.channel.as_str(), manifest.release, manifest.envelope_bytes())
    })?;
    download(cfg, source, &mut store, &manifest, &payload, counters, shutdown).await?;
    if *shutdown.borrow() {
        return Err(Failure::new(Reason::Io, "shutting down"));
    }

    // Step 5: wait for a hold to end, else apply.
    let held = tokio::task::block_in_place(|| -> Result<Option<Hold>, Failure> {
        let held = hold::check(cfg, &store, crate::store::now(), false)?;
        match &held {
            Some(h) => {
                hold::report_once(&store, manifest.release, h)?;
                super::pending::remember(&store, &manifest_digest)?;
            }
            None => super::pending::forget(&store)?,
        }
        Ok(held)
    })?;
    if let Some(hold) = held {
        return Ok(Cycle::Held { release: applied, pending: manifest.release, hold });
    }
    apply(cfg, manifest, payload, counters).await
}

/// Applies a stored, verified payload on a blocking thread, holding the state lock; never
/// abandoned midway.
pub(super) async fn apply(
    cfg: &Config,
    manifest: Verified<ReleaseManifest>,
    payload: PayloadRef,
    counters: &Arc<Counters>,
) -> Result<Cycle, Failure> {
    let release = manifest.release;
    let cfg2 = cfg.clone();
    counters.applying.store(true, Ordering::SeqCst);
    let outcome = tokio::task::spawn_blocking(move || -> Result<Option<ApplyOutcome>, Failure> {
        let mut agent = Agent::open(cfg2)?;
        // Someone else (an import from a USB stick) may have applied it while we downloaded:
        // that is convergence, not a rejection to record.
        if agent.applied()?.is_some_and(|(_, r)| r.release >= manifest.release) {
            return Ok(None);
        }
        agent.apply(&manifest, &payload).map(Some).map_err(|f| agent.reject(Some(manifest.release), f))
    })
    .await;
    counters.applying.store(false, Ordering::SeqCst);
    let outcome = outcome.map_err(|e| Failure::new(Reason::Io, format!("apply thread: {e}")))??;
    match outcome {
        Some(ApplyOutcome::Committed { release, .. }) => Ok(Cycle::Applied { release }),
        Some(ApplyOutcome::RolledBack { release, failure }) => {
            let add = |s: Store| metrics::add(&s, Metric::Rollbacks, 1);
            tokio::task::block_in_place(|| Store::open(&cfg.state_dir).and_then(add))?;
            Ok(Cycle::RolledBack { release, failure })
        }
        None => Ok(Cycle::Converged {
            release: applied_release(cfg)?,
            note: Some(format!("release {release} was applied meanwhile by another ferry-agent")),
        }),
    }
}

pub(super) fn applied_release(cfg: &Config) -> Result<Option<u64>, Failure> {
    let slots = crate::slots::Slots::open(&cfg.state_dir)?;
    Ok(match slots.current()? {
        Some(s) => slots.read_record(s)?.map(|r| r.release),
        None => None,
    })
}

async fn fetch_manifest(
    source: &Source,
    root: &VerifiedRoot,
    digest: &Sha256Digest,
    cfg: &Config,
) -> Result<Verified<ReleaseManifest>, Failure> {
    let rel = layout::manifest_path(digest);
    let bytes = source
        .get_optional(&rel, cfg.limits.max_envelope)
        .await?
        .ok_or_else(|| Failure::new(Reason::Io, format!("the mirror has no {rel}")))?;
    if Sha256Digest::of(&bytes) != *digest {
        return Err(Failure::new(Reason::DigestMismatch, format!("{rel} does not hash to its name")));
    }
    Ok(root.verify_manifest(&bytes, &cfg.limits)?)
}

/// The smallest payload this device can use.
fn choose_payload(cfg: &Config, manifest: &ReleaseManifest) -> Result<PayloadRef, Failure> {
    let store = tokio::task::block_in_place(|| Store::open(&cfg.state_dir))?;
    let objects_dir = cfg.state_dir.join("objects");
    let holds = |base: &ferry_proto::GitOid| -> bool {
        let kind = match base.format() {
            ferry_proto::ObjectFormat::Sha1 => gix_hash::Kind::Sha1,
            ferry_proto::ObjectFormat::Sha256 => gix_hash::Kind::Sha256,
        };
        let format_ok = store.setting("object_format").ok().flatten().is_none_or(|f| f == base.format().as_str());
        format_ok
            && crate::git::ObjectStore::open(&objects_dir, kind)
                .ok()
                .zip(gix_hash::ObjectId::from_hex(base.as_str().as_bytes()).ok())
                .is_some_and(|(o, id)| o.contains(&id))
    };
    let mut usable: Vec<&PayloadRef> = manifest
        .payloads
        .iter()
        .filter(|p| match &p.kind {
            PayloadKind::Full => true,
            PayloadKind::Delta { base_commit, .. } => holds(base_commit),
        })
        .collect();
    usable.sort_by_key(|p| p.size);
    usable.first().map(|p| (*p).clone()).ok_or_else(|| {
        Failure::new(
            Reason::MissingPrerequisite,
            format!("release {} has no payload this device can use", manifest.release),
        )
    })
}

/// Downloads (resuming) and verifies one payload into the store.
async fn download(
    cfg: &Config,
    source: &Source,
    store: &mut Store,
    manifest: &Verified<ReleaseManifest>,
    payload: &PayloadRef,
    counters: &Arc<Counters>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), Failure> {
    if tokio::task::block_in_place(|| store.payload_verified(&payload.sha256))? {
        return Ok(());
    }
    let rel = layout::payload_path(&payload.sha256);
    // The payload starts after the container header, whose length the manifest fixes.
    let header = ferry_proto::container::ContainerHeader {
        manifest: manifest.envelope_bytes().to_vec(),
        payload_sha256: payload.sha256,
        payload_size: payload.size,
    };
    let start = header.encoded_len();
    let manifest_digest = manifest.digest();
    let policy = super::retry_policy(cfg);
    let mut delays = policy.delays();
    // The slow-retrieval floor of this mirror's transfers (none for a directory).
    let floor = match source {
        Source::Http { fetcher, .. } => fetcher.min_rate(),
        Source::Dir(_) => None,
    };
    loop {
        // On every attempt: an import that failed midway deletes the row.
        tokio::task::block_in_place(|| store.ensure_payload(&payload.sha256, &manifest_digest, payload.size))?;
        let (offset, validator) =
            tokio::task::block_in_place(|| store.payload_progress(&payload.sha256))?.unwrap_or((0, None));
        if offset < payload.size {
            let mut sink = StoreSink::new(store, payload.sha256, manifest_digest, payload.size);
            let mut stop = shutdown.clone();
            let resume = Resume { start, offset, validator };
            let began = tokio::time::Instant::now();
            let result = tokio::select! {
                r = source.download(&rel, payload.size, resume, &mut sink) => r,
                _ = stop.wait_for(|s| *s) => return Err(Failure::new(Reason::Io, "shutting down; the download resumes on the next start")),
            };
            let (progressed, refused) = (sink.written, sink.refused);
            counters.downloaded.fetch_add(progressed, Ordering::Relaxed);
            if let Err(e) = result {
                if refused {
                    // Another writer (`ferry-agent import`) took the payload over. It holds
                    // the state lock while it copies, verifies and applies: once it lets go,
                    // use what it did, or go on from whatever it left.
                    wait_for_state_lock(cfg, shutdown).await?;
                    // Applied meanwhile (its payload then pruned), or at least verified.
                    let applied = applied_release(cfg)?.is_some_and(|a| a >= manifest.release);
                    if applied || tokio::task::block_in_place(|| store.payload_verified(&payload.sha256))? {
                        tracing::info!(
                            release = manifest.release,
                            applied,
                            "another ferry-agent took the payload over"
                        );
                        return Ok(());
                    }
                } else if !e.is_transient() || e.is_too_slow() {
                    // Below the minimum rate: fail over to the next mirror; what arrived
                    // stays, and the download resumes from there.
                    return Err(e.into());
                }
                // Progress resets the backoff: a link that drops every few KiB still
                // converges. Only progress at the minimum rate counts, or a mirror that
                // sends a few bytes and hangs up would hold the device for ever.
                let progress = crate::fetch::attempt_progressed(floor, progressed, began.elapsed());
                if progress {
                    delays = policy.delays();
                }
                let Some(delay) = delays.next() else { return Err(e.into()) };
                let delay = if progress { std::time::Duration::ZERO } else { policy.honour_retry_after(delay, &e) };
                counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    bytes = progressed,
                    "download interrupted: {e}; resuming"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        if tokio::task::block_in_place(|| store.verify_and_mark(&payload.sha256, payload.size))? {
            tracing::info!(release = manifest.release, bytes = payload.size, "payload downloaded and verified");
            crate::crash_point!("download::after-verify");
            record(cfg, |s| {
                s.record_event("fetched", Some(manifest.release), None, &format!("{} bytes verified", payload.size))
            });
            return Ok(());
        }
        tokio::task::block_in_place(|| store.discard_unverified_payload(&payload.sha256))?;
        return Err(Failure::new(
            Reason::DigestMismatch,
            format!("downloaded {rel} does not hash to the signed digest; discarded"),
        ));
    }
}

/// Waits until no other process holds the state lock, polling so that a shutdown still
/// stops the daemon promptly; gives up after [`LOCK_WAIT`].
async fn wait_for_state_lock(cfg: &Config, shutdown: &tokio::sync::watch::Receiver<bool>) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match tokio::task::block_in_place(|| StateLock::acquire(&cfg.state_dir, Duration::ZERO)) {
            Ok(_released_at_once) => return Ok(()),
            Err(f) if *shutdown.borrow() || std::time::Instant::now() >= deadline => return Err(f),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
