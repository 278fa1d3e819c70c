//! Freshness that survives bad clocks.
//!
//! The device persists the highest channel index version it accepted and the latest
//! signing time it has seen. "Now", for expiry checks, is the later of the system clock
//! and that latest seen time: a clock set back cannot make an expired index acceptable
//! again, and a device that boots with no clock (1970) still accepts data newer than
//! what it has seen, because the data's own signing time moves "now" forward.
//!
//! It also remembers the highest index version it has seen *expire*: that index (and any
//! older one) stays refused even if the clock later moves back inside its validity. The
//! next index the operator signs lifts it.
//!
//! A rotation of the trust root that changes the `index` role's keys or threshold wipes
//! all three (TUF 5.3.11): an index key that was stolen may have pushed the version (a
//! fast-forward attack) or the signing time far ahead, and rotating that key away is how
//! the operator recovers such devices. The seen time restarts at the new root's signing
//! time, which only root keys vouch for.

use ferry_proto::index::ChannelIndex;

use crate::store::{Store, StoreError};

const SEEN_VERSION: &str = "index_version";
const SEEN_TIME: &str = "latest_seen_time";
const EXPIRED_VERSION: &str = "expired_index_version";

/// What the device has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// Highest index version accepted.
    pub index_version: u64,
    /// Latest signing time (index `created`) accepted.
    pub time: u64,
    /// Highest index version seen expired.
    pub expired_version: u64,
}

/// Reads what was seen.
pub fn seen(store: &Store) -> Result<Seen, StoreError> {
    let get = |k: &str| -> Result<u64, StoreError> { Ok(store.setting(k)?.and_then(|v| v.parse().ok()).unwrap_or(0)) };
    Ok(Seen { index_version: get(SEEN_VERSION)?, time: get(SEEN_TIME)?, expired_version: get(EXPIRED_VERSION)? })
}

/// Checks a verified index for `channel` against what was seen and the clock: channel,
/// version, expiry, and not an index already seen expired. Records an expiry it finds, so
/// a clock set back later cannot revive that index. Returns the time expiry was judged by.
pub fn check_index(
    store: &Store,
    index: &ChannelIndex,
    channel: &ferry_proto::ChannelName,
    clock: u64,
) -> Result<u64, crate::failure::Failure> {
    let seen = seen(store)?;
    let now = effective_now(clock, &seen);
    if let Err(e) = index.check_policy(channel, seen.index_version, now) {
        if e.reason() == ferry_proto::Reason::Expired {
            store.set_setting(EXPIRED_VERSION, &seen.expired_version.max(index.version).to_string())?;
        }
        return Err(e.into());
    }
    if index.version <= seen.expired_version {
        return Err(ferry_proto::index::IndexPolicyError::Expired {
            version: index.version,
            expires: index.expires,
            now,
        }
        .into());
    }
    Ok(now)
}

/// The time to judge expiry by: the later of the clock and what was seen.
pub fn effective_now(clock: u64, seen: &Seen) -> u64 {
    clock.max(seen.time)
}

/// Records an accepted index (never moves either value backwards).
pub fn record(store: &Store, index: &ChannelIndex) -> Result<(), StoreError> {
    let old = seen(store)?;
    store.set_setting(SEEN_VERSION, &old.index_version.max(index.version).to_string())?;
    store.set_setting(SEEN_TIME, &old.time.max(index.created).to_string())?;
    Ok(())
}

/// Forgets what indexes signed by a replaced `index` role established; the new trust root's
/// signing time becomes the latest seen time.
fn forget_after_index_rotation(store: &Store, root_created: u64) -> Result<(), StoreError> {
    store.clear_setting(SEEN_VERSION)?;
    store.clear_setting(EXPIRED_VERSION)?;
    store.set_setting(SEEN_TIME, &root_created.to_string())?;
    Ok(())
}

/// Applies [`forget_after_index_rotation`] when a rotation from `before` to `after`
/// changed the index role; says whether it did.
pub fn after_rotation(
    store: &Store,
    before: &ferry_proto::TrustRoot,
    after: &ferry_proto::TrustRoot,
) -> Result<bool, StoreError> {
    if before.index == after.index {
        return Ok(false);
    }
    forget_after_index_rotation(store, after.created)?;
    store.record_event(
        "index-keys-rotated",
        None,
        None,
        &format!(
            "trust root {} replaced the index keys: index versions and times seen under the old keys are forgotten",
            after.version
        ),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_set_back_does_not_revive_expired_data() {
        let seen = Seen { index_version: 5, time: 2_000, expired_version: 0 };
        assert_eq!(effective_now(1_000, &seen), 2_000);
        assert_eq!(effective_now(3_000, &seen), 3_000);
        assert_eq!(effective_now(0, &Seen::default()), 0);
    }
}
