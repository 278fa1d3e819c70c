//! Staged rollouts: which devices take a channel's latest release, decided on the device
//! from the signed channel index alone, so a rollout holds with no server in the loop and
//! over USB alike.
//!
//! Each device falls in a bucket from 0 to 9,999, from a SHA-256 over a domain-separated
//! (device id, channel, release); it takes the release when its bucket is under
//! `rollout_percent × 100`. The bucket does not depend on the percentage, so widening a
//! rollout from 10 % to 50 % keeps every device of the first 10 % and adds others; a new
//! release reshuffles the buckets, so the same devices are not always the first.

use sha2::{Digest, Sha256};

use crate::index::ChannelIndex;
use crate::names::ChannelName;

/// Domain separation for the bucket hash.
const ROLLOUT_TAG: &[u8] = b"ferry/rollout/v1\0";

/// Number of buckets: a percentage selects `percent × 100` of them.
pub const BUCKETS: u64 = 10_000;

/// The device's bucket, in `0..BUCKETS`, for one release of one channel.
pub fn bucket(device_id: &str, channel: &ChannelName, release: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(ROLLOUT_TAG);
    h.update(device_id.as_bytes());
    h.update([0]);
    h.update(channel.as_str().as_bytes());
    h.update([0]);
    h.update(release.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// Whether a rollout at `percent` (0–100) includes this device.
pub fn selects(device_id: &str, channel: &ChannelName, release: u64, percent: u8) -> bool {
    bucket(device_id, channel, release) < u64::from(percent.min(100)) * 100
}

/// What a verified index says about this device and its latest release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The device may take the release.
    Take,
    /// The rollout is halted: no device newly takes the release.
    Halted,
    /// The rollout has not reached this device yet.
    NotYet {
        /// The index's rollout percentage.
        percent: u8,
    },
}

/// Whether the device may newly take `release`. Only the index's latest release is
/// staged: an older release (the previous latest, fully rolled out) is always admitted.
pub fn admission(index: &ChannelIndex, device_id: &str, release: u64) -> Admission {
    match &index.latest {
        Some(latest) if latest.release == release => {
            if index.halted {
                Admission::Halted
            } else if selects(device_id, &index.channel, release, index.rollout_percent) {
                Admission::Take
            } else {
                Admission::NotYet { percent: index.rollout_percent }
            }
        }
        _ => Admission::Take,
    }
}

impl Admission {
    /// A one-line explanation for status, logs and reports.
    pub fn describe(self, release: u64) -> Option<String> {
        match self {
            Admission::Take => None,
            Admission::Halted => Some(format!("the rollout of release {release} is halted; staying on this release")),
            Admission::NotYet { percent } => Some(format!(
                "release {release} is rolled out to {percent}% of devices and not yet to this one; waiting"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelName {
        "stable".parse().expect("valid channel")
    }

    /// 1,000 simulated device ids, shaped like `/etc/machine-id` (32 hex digits), made
    /// by hashing a counter so they are spread like real ones.
    fn fleet() -> Vec<String> {
        (0..1000u32).map(|i| hex::encode(&Sha256::digest(i.to_be_bytes())[..16])).collect()
    }

    fn share(ids: &[String], release: u64, percent: u8) -> f64 {
        let taken = ids.iter().filter(|id| selects(id, &channel(), release, percent)).count();
        100.0 * taken as f64 / ids.len() as f64
    }

    #[test]
    fn shares_of_a_thousand_devices_are_within_two_points_of_the_target() {
        // Release 1 of `stable`, the rollout the end-to-end tests stage.
        let ids = fleet();
        for percent in [10u8, 50, 100] {
            let got = share(&ids, 1, percent);
            assert!((got - f64::from(percent)).abs() <= 2.0, "{got:.1}% took a {percent}% rollout");
        }
    }

    /// Which 1,000 devices fall under a percentage is a fair coin per device: the share is
    /// binomial (standard deviation 0.95 points at 10 %, 1.58 at 50 %), unbiased over
    /// releases. Over 200 releases the share is within 2 points of 10 % in about 96 % of
    /// them and of 50 % in about 79 % (normal approximation); checked with margin.
    #[test]
    fn shares_over_many_releases_are_unbiased_and_binomially_spread() {
        let ids = fleet();
        for (percent, min_within) in [(10u8, 0.90), (50, 0.70)] {
            let shares: Vec<f64> = (1..=200).map(|r| share(&ids, r, percent)).collect();
            let mean = shares.iter().sum::<f64>() / shares.len() as f64;
            let within = shares.iter().filter(|s| (*s - f64::from(percent)).abs() <= 2.0).count() as f64 / 200.0;
            let worst = shares.iter().map(|s| (s - f64::from(percent)).abs()).fold(0.0, f64::max);
            assert!((mean - f64::from(percent)).abs() < 0.5, "{percent}%: mean share {mean:.2}%");
            assert!(within >= min_within, "{percent}%: only {:.0}% of releases within 2 points", within * 100.0);
            assert!(worst < 6.0, "{percent}%: a release was {worst:.1} points off");
        }
    }

    #[test]
    fn widening_keeps_every_device_already_selected() {
        let ids = fleet();
        for release in 1..=20 {
            for id in &ids {
                let mut was = false;
                for percent in 0..=100u8 {
                    let now = selects(id, &channel(), release, percent);
                    assert!(!was || now, "{id} left release {release}'s rollout when it widened to {percent}%");
                    was = now;
                }
            }
        }
    }

    #[test]
    fn zero_selects_nobody_and_hundred_selects_everybody() {
        for id in fleet() {
            assert!(!selects(&id, &channel(), 7, 0));
            assert!(selects(&id, &channel(), 7, 100));
        }
    }

    #[test]
    fn buckets_differ_between_releases_and_channels() {
        let ids = fleet();
        let other = "beta".parse().expect("valid channel");
        let same_release = ids.iter().filter(|id| bucket(id, &channel(), 1) == bucket(id, &channel(), 2)).count();
        let same_channel = ids.iter().filter(|id| bucket(id, &channel(), 1) == bucket(id, &other, 1)).count();
        assert!(same_release < 5 && same_channel < 5, "{same_release} {same_channel}");
    }

    #[test]
    fn the_bucket_is_pinned() {
        // The rule is part of the wire contract (docs/formats.md): a change here would move
        // devices in and out of running rollouts.
        assert_eq!(bucket("pump-17", &channel(), 42), bucket("pump-17", &channel(), 42));
        let mut h = Sha256::new();
        h.update(b"ferry/rollout/v1\0pump-17\0stable\0");
        h.update(42u64.to_be_bytes());
        let d = h.finalize();
        let expected = u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % 10_000;
        assert_eq!(bucket("pump-17", &channel(), 42), expected);
    }
}
