//! Freshness that survives bad clocks.
//!
//! The device persists the highest channel index version it accepted and the latest
//! signing time it has seen. "Now", for expiry checks, is the later of the system clock
//! and that latest seen time: a clock set back cannot make an expired index acceptable
//! again, and a device that boots with no clock (1970) still accepts data newer than
//! what it has seen, because the data's own signing time moves "now" forward.

use ferry_proto::index::ChannelIndex;

use crate::store::{Store, StoreError};

const SEEN_VERSION: &str = "index_version";
const SEEN_TIME: &str = "latest_seen_time";

/// What the device has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// Highest index version accepted.
    pub index_version: u64,
    /// Latest signing time (index `created`) accepted.
    pub time: u64,
}

/// Reads what was seen.
pub fn seen(store: &Store) -> Result<Seen, StoreError> {
    let get = |k: &str| -> Result<u64, StoreError> { Ok(store.setting(k)?.and_then(|v| v.parse().ok()).unwrap_or(0)) };
    Ok(Seen { index_version: get(SEEN_VERSION)?, time: get(SEEN_TIME)? })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_set_back_does_not_revive_expired_data() {
        let seen = Seen { index_version: 5, time: 2_000 };
        assert_eq!(effective_now(1_000, &seen), 2_000);
        assert_eq!(effective_now(3_000, &seen), 3_000);
        assert_eq!(effective_now(0, &Seen::default()), 0);
    }
}
