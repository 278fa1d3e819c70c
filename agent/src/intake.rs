//! `ferry-agent import PATH`: releases that arrive as files — one `.ferry` file, a
//! directory of them, or a mirror layout such as `bundler export` writes to a USB stick.
//!
//! 1. From a mirror layout, walk the trust root forward through `trust/root.<n>` and note
//!    the channel index (its version is remembered so an older index is refused later;
//!    an expired index is reported, but the signed releases the operator carried in are
//!    still eligible: release numbers, not the index, stop rollback).
//! 2. Read each candidate's header, verify its manifest against the trust root, and keep
//!    the newest release this device may take (channel, newer, expiry, labels, refusals,
//!    and the staged rollout of the medium's channel index: a latest release that is halted
//!    or not yet rolled out to this device is passed over).
//! 3. Choose its smallest usable payload: a delta whose base commit the object store
//!    holds, else the full payload; a delta alone without its base is `missing-prerequisite`.
//! 4. Copy the payload into the store (its file under `payloads/`, its progress in SQLite),
//!    then hash what was stored; only a copy whose size and digest match the signed entry
//!    is marked verified, and only that copy is ever read as a bundle.
//! 5. Apply it — unless applying is paused on the device, or it is outside the maintenance
//!    windows (`--now` overrides those): then it stays stored and verified, and the service
//!    applies it when the hold ends.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ferry_proto::container::ContainerHeader;
use ferry_proto::manifest::{PayloadKind, PayloadRef};
use ferry_proto::{layout, Reason, ReleaseManifest, Verified};

use crate::agent::{Agent, ApplyOutcome};
use crate::failure::Failure;
use crate::hold::{self, Hold};

/// The result of an import.
#[derive(Debug)]
pub enum ImportResult {
    /// The newest release found is the one already applied.
    UpToDate { release: u64 },
    /// A release was applied (or rolled back).
    Applied(ApplyOutcome),
    /// The medium's newest release is held back from this device by its staged rollout
    /// (halted, or not yet rolled out to it); nothing older was newer than the applied one.
    RolloutWait { release: u64, note: String, applied: Option<u64> },
    /// A release was stored and verified; applying it waits for a hold to end.
    Held { release: u64, hold: Hold },
}

/// A release file that verified and may be applied.
struct Candidate {
    manifest: Verified<ReleaseManifest>,
    payload: PayloadRef,
    path: PathBuf,
}

/// Runs an import from `path`, telling `say` what happens; `now` overrides the maintenance
/// windows (an operator at the device), never a pause.
pub fn import_path(
    agent: &mut Agent,
    path: &Path,
    now: bool,
    say: &mut dyn FnMut(String),
) -> Result<ImportResult, Failure> {
    let meta = fs::metadata(path).map_err(|e| Failure::new(Reason::Io, format!("{}: {e}", path.display())))?;
    let single = meta.is_file();
    let mut index = None;
    let files = if single {
        vec![path.to_path_buf()]
    } else {
        // Reports the operator stored came back acknowledged on the same medium.
        match crate::export::apply_ack_file(agent.store(), &agent.config().device_id, path) {
            Ok(outcome) => outcome.describe().into_iter().for_each(&mut *say),
            Err(f) => say(format!("note: ack file not applied: {f}")),
        }
        index = note_mirror_layout(agent, path, say)?;
        ferry_files(path)?
    };
    if files.is_empty() {
        return Err(Failure::new(Reason::Malformed, format!("{} holds no .ferry files", path.display())));
    }

    // Step 2: verify every header and keep what this device may take.
    let applied = agent.applied()?.map(|(_, r)| r.release);
    let held_back = held_back(agent, index.as_deref(), applied)?;
    if let Some((_, note)) = &held_back {
        say(format!("note: {note}"));
    }
    let mut eligible: Vec<Candidate> = Vec::new();
    let mut first_rejection: Option<Failure> = None;
    let mut newest_seen = None;
    for file in &files {
        match read_candidate(agent, file) {
            Ok(c) => {
                newest_seen = newest_seen.max(Some(c.manifest.release));
                match agent.check_policy(&c.manifest) {
                    Ok(()) if held_back.as_ref().is_some_and(|(r, _)| *r == c.manifest.release) => {}
                    Ok(()) => eligible.push(c),
                    Err(f) if !single && f.reason == Reason::Rollback => {}
                    Err(f) if !single && f.reason == Reason::WrongChannel => {
                        tracing::debug!(file = %file.display(), "{}", f.message);
                    }
                    Err(f) => {
                        let f = agent.reject(Some(c.manifest.release), f.context(file.display()));
                        first_rejection.get_or_insert(f);
                    }
                }
            }
            Err(f) => {
                let f = agent.reject(None, f.context(file.display()));
                first_rejection.get_or_insert(f);
            }
        }
    }
    let Some(best) = eligible.iter().map(|c| c.manifest.release).max() else {
        if let Some(f) = first_rejection {
            return Err(f);
        }
        if let Some((release, note)) = held_back {
            return Ok(ImportResult::RolloutWait { release, note, applied });
        }
        return match (applied, newest_seen) {
            (Some(a), Some(n)) if n <= a => Ok(ImportResult::UpToDate { release: a }),
            _ => Err(Failure::new(
                Reason::WrongChannel,
                format!("{} holds no release for channel {}", path.display(), agent.config().channel),
            )),
        };
    };

    // Step 3: the smallest usable payload of the newest release.
    let mut usable: Vec<Candidate> = eligible
        .into_iter()
        .filter(|c| c.manifest.release == best)
        .filter(|c| match &c.payload.kind {
            PayloadKind::Full => true,
            PayloadKind::Delta { base_commit, .. } => agent.holds_commit(base_commit),
        })
        .collect();
    usable.sort_by_key(|c| c.payload.size);
    let Some(chosen) = usable.into_iter().next() else {
        let f = Failure::new(
            Reason::MissingPrerequisite,
            format!(
                "release {best} is here only as deltas whose base this device does not hold; bring its full payload"
            ),
        );
        return Err(agent.reject(Some(best), f));
    };
    let kind = describe(&chosen.payload);
    say(format!(
        "verified release {} ({kind}, {} bytes) from {}",
        chosen.manifest.release,
        chosen.payload.size,
        chosen.path.display()
    ));

    // Step 4: copy into the store, verifying.
    store_payload(agent, &chosen).map_err(|f| agent.reject(Some(chosen.manifest.release), f))?;
    agent.store().record_event(
        "verified",
        Some(chosen.manifest.release),
        None,
        &format!("{kind} payload stored and verified"),
    )?;

    // Step 5: apply, unless held.
    let release = chosen.manifest.release;
    if let Some(h) = hold::check(agent.config(), agent.store(), crate::store::now(), now)? {
        hold::report_once(agent.store(), release, &h)?;
        crate::daemon::pending::remember(agent.store(), &chosen.manifest.digest())?;
        return Ok(ImportResult::Held { release, hold: h });
    }
    crate::daemon::pending::forget(agent.store())?;
    let outcome =
        agent.apply(&chosen.manifest, &chosen.payload).map_err(|f| agent.reject(Some(chosen.manifest.release), f))?;
    Ok(ImportResult::Applied(outcome))
}

fn describe(p: &PayloadRef) -> String {
    match &p.kind {
        PayloadKind::Full => "full".into(),
        PayloadKind::Delta { from_release, .. } => format!("delta from release {from_release}"),
    }
}

/// The release the medium's channel index holds back from this device (its latest, when
/// halted or not yet rolled out to it; see [`ferry_proto::rollout`]), said and recorded.
fn held_back(
    agent: &Agent,
    index: Option<&ferry_proto::ChannelIndex>,
    applied: Option<u64>,
) -> Result<Option<(u64, String)>, Failure> {
    let Some((index, latest)) = index.and_then(|i| Some((i, i.latest.as_ref()?.release))) else { return Ok(None) };
    if applied.is_some_and(|a| a >= latest) {
        return Ok(None);
    }
    let admission = ferry_proto::rollout::admission(index, &agent.config().device_id, latest);
    let Some(note) = admission.describe(latest) else { return Ok(None) };
    agent.store().record_event("rollout-wait", Some(latest), None, &note)?;
    Ok(Some((latest, note)))
}

/// Step 1 for a mirror layout: trust roots and the channel index, which is returned when
/// there is one that verified.
fn note_mirror_layout(
    agent: &mut Agent,
    dir: &Path,
    say: &mut dyn FnMut(String),
) -> Result<Option<Verified<ferry_proto::ChannelIndex>>, Failure> {
    if dir.join("trust").is_dir() {
        let read = |n: u64| -> Result<Option<Vec<u8>>, std::io::Error> {
            match fs::read(dir.join(layout::root_path(n))) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let before = agent.root().version();
        agent.update_trust(read).map_err(|f| agent.reject(None, f.context("trust roots")))?;
        if agent.root().version() != before {
            say(format!("trust root rotated from version {before} to {}", agent.root().version()));
        }
    }
    let index_path = dir.join(layout::index_path(&agent.config().channel));
    let Ok(bytes) = fs::read(&index_path) else { return Ok(None) };
    let index = agent
        .root()
        .verify_index(&bytes, &agent.config().limits)
        .map_err(|e| agent.reject(None, Failure::from(e).context(index_path.display())))?;
    match crate::freshness::check_index(agent.store(), &index, &agent.config().channel, crate::store::now()) {
        Ok(_) => crate::freshness::record(agent.store(), &index)?,
        Err(e) if e.reason == Reason::Expired => {
            let msg = format!("{}; using the signed releases on the medium anyway", e.message);
            tracing::warn!("{msg}");
            agent.store().record_event("index-expired", None, Some(Reason::Expired), &msg)?;
            say(format!("note: {msg}"));
        }
        Err(e) => return Err(agent.reject(None, e.context(index_path.display()))),
    }
    Ok(Some(index))
}

/// `.ferry` files directly in `dir` and in `dir/payloads`, sorted.
fn ferry_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let mut files = Vec::new();
    for d in [dir.to_path_buf(), dir.join("payloads")] {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "ferry") && entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn read_candidate(agent: &Agent, path: &Path) -> Result<Candidate, Failure> {
    let mut file = BufReader::new(fs::File::open(path)?);
    let header = ContainerHeader::read_from(&mut file, &agent.config().limits)?;
    let (manifest, payload) = header.verify(agent.root(), &agent.config().limits)?;
    Ok(Candidate { manifest, payload, path: path.to_path_buf() })
}

/// Step 4: copies exactly the signed number of payload bytes into the store, then hashes
/// what was stored and marks it verified only when size and digest match. Anything else is
/// discarded.
fn store_payload(agent: &mut Agent, c: &Candidate) -> Result<(), Failure> {
    let store = &mut agent.store;
    store.put_manifest(
        &c.manifest.digest(),
        c.manifest.channel.as_str(),
        c.manifest.release,
        c.manifest.envelope_bytes(),
    )?;
    if store.payload_verified(&c.payload.sha256)? {
        return Ok(());
    }
    crate::crash_point!("intake::before-store");
    let mut file = BufReader::new(fs::File::open(&c.path)?);
    // The header is re-read from the file opened now; the payload bytes that follow are
    // what gets stored, then hashed.
    let header = ContainerHeader::read_from(&mut file, &agent.cfg.limits)?;
    if header.payload_sha256 != c.payload.sha256 || header.manifest != c.manifest.envelope_bytes() {
        return Err(Failure::new(
            Reason::DigestMismatch,
            format!("{} changed while it was being read", c.path.display()),
        ));
    }
    if !store.begin_payload(&c.payload.sha256, &c.manifest.digest(), c.payload.size)? {
        return Ok(()); // verified meanwhile by another writer (the daemon)
    }
    let started = std::time::Instant::now();
    let result = copy_payload(store, &mut file, &c.payload);
    if result.is_err() {
        store.discard_unverified_payload(&c.payload.sha256)?;
    }
    tracing::debug!(bytes = c.payload.size, took = ?started.elapsed(), ok = result.is_ok(), "payload stored and hashed");
    result
}

/// Bytes copied from a local file per counted (synced) piece. A sync per mebibyte made the
/// copy of a 120 MiB payload take about 0.8 s on the session-8 machine, one per 16 MiB
/// 0.4–0.5 s; the copy goes through a 64 KiB buffer whatever the piece.
const COPY_PIECE: u64 = 8 << 20;

fn copy_payload(store: &mut crate::store::Store, file: &mut dyn Read, p: &PayloadRef) -> Result<(), Failure> {
    let mut offset = 0u64;
    while offset < p.size {
        let want = (p.size - offset).min(COPY_PIECE);
        let Some(n) = store.append_from(&p.sha256, offset, file, want)? else {
            return Err(Failure::new(Reason::Io, "another writer is storing the same payload; try again"));
        };
        offset += n;
        if n < want {
            return Err(Failure::new(
                Reason::DigestMismatch,
                format!("payload is truncated: {offset} of {} signed bytes", p.size),
            ));
        }
        crate::crash_point!("intake::after-chunk");
    }
    if file.read(&mut [0u8; 1])? != 0 {
        return Err(Failure::new(
            Reason::SizeExceeded,
            format!("payload is longer than its signed size of {} bytes", p.size),
        ));
    }
    if !store.verify_and_mark(&p.sha256, p.size)? {
        return Err(Failure::new(Reason::DigestMismatch, format!("payload does not hash to the signed {}", p.sha256)));
    }
    Ok(())
}
