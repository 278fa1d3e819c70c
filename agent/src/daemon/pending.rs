//! A release downloaded (or imported) and verified, then held by a pause or a maintenance
//! window, is remembered by its manifest digest, so that it is applied once the hold ends
//! even when no mirror is in reach — a device fed only by USB sticks has none. Whatever
//! is remembered is verified again against the trust root and the device's policy before
//! it is applied; only a payload already verified in the store is used.

use std::sync::Arc;

use ferry_proto::manifest::PayloadRef;
use ferry_proto::{ReleaseManifest, Sha256Digest, Verified};

use super::cycle::{self, Counters, Cycle};
use crate::config::Config;
use crate::failure::Failure;
use crate::hold;
use crate::store::{Store, StoreError};

/// Settings key: the held release's manifest digest.
const PENDING_KEY: &str = "pending_manifest";

/// Remembers a held release.
pub fn remember(store: &Store, manifest: &Sha256Digest) -> Result<(), StoreError> {
    store.set_setting(PENDING_KEY, &manifest.to_hex())
}

/// Forgets the held release (applied, superseded, or no longer admitted).
pub fn forget(store: &Store) -> Result<(), StoreError> {
    store.clear_setting(PENDING_KEY)
}

/// Applies the remembered release if its hold has ended; `None` when there is nothing to do.
pub async fn apply_if_due(cfg: &Config, counters: &Arc<Counters>) -> Result<Option<Cycle>, Failure> {
    let due = tokio::task::block_in_place(|| due(cfg))?;
    let Some((manifest, payload)) = due else { return Ok(None) };
    tracing::info!(release = manifest.release, "applying the release that waited for its hold to end");
    let outcome = cycle::apply(cfg, manifest, payload, counters).await;
    tokio::task::block_in_place(|| Store::open(&cfg.state_dir).and_then(|s| forget(&s)))?;
    outcome.map(Some)
}

/// The remembered release and its stored payload, when it is still wanted and not held.
fn due(cfg: &Config) -> Result<Option<(Verified<ReleaseManifest>, PayloadRef)>, Failure> {
    let store = Store::open(&cfg.state_dir)?;
    let Some(digest) = store.setting(PENDING_KEY)? else { return Ok(None) };
    let now = crate::store::now();
    if hold::check(cfg, &store, now, false)?.is_some() {
        return Ok(None);
    }
    let wanted = || -> Result<Option<(Verified<ReleaseManifest>, PayloadRef)>, Failure> {
        let Ok(digest) = digest.parse::<Sha256Digest>() else { return Ok(None) };
        let Some(bytes) = store.manifest(&digest)? else { return Ok(None) };
        let root = crate::agent::load_trust(cfg, &store)?;
        let manifest = root.verify_manifest(&bytes, &cfg.limits)?;
        let applied = cycle::applied_release(cfg)?;
        // Expiry by the later of the clock and the newest signing time accepted.
        let judged = crate::freshness::effective_now(now, &crate::freshness::seen(&store)?);
        if manifest.check_policy(&cfg.channel, applied, judged, &cfg.labels).is_err()
            || store.refusal(manifest.channel.as_str(), manifest.release)?.is_some()
        {
            return Ok(None);
        }
        let mut stored = Vec::new();
        for p in &manifest.payloads {
            if store.payload_verified(&p.sha256)? {
                stored.push(p.clone());
            }
        }
        Ok(stored.into_iter().min_by_key(|p| p.size).map(|p| (manifest, p)))
    };
    let found = wanted()?;
    if found.is_none() {
        forget(&store)?;
    }
    Ok(found)
}
