//! Retrying transient fetch failures: exponential backoff with full jitter, bounded
//! attempts, and the server's `Retry-After` honoured.
//!
//! backon drives the loop, but its own `with_jitter()` adds `U(0,1) × delay` on top of the
//! delay (so up to twice the delay, even past the maximum), which is not full jitter. So the
//! exponential sequence comes from backon's [`ExponentialBuilder`] without jitter and
//! [`FullJitter`] draws each sleep uniformly from `[min_delay, that delay]`: a fleet that
//! lost its mirror at the same moment spreads its retries instead of returning in lockstep,
//! and no device sleeps less than `min_delay`. A server's `Retry-After` raises the delay to
//! at least what it asked (capped at `max_delay`, so a hostile mirror cannot park a device).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use super::FetchError;

/// How to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay, and the floor of every delay. Default 1 s.
    pub min_delay: Duration,
    /// The cap of every delay, `Retry-After` included. Default 5 min.
    pub max_delay: Duration,
    /// Attempts in all, the first included (0 and 1 both mean "no retry"). Default 8.
    pub max_attempts: usize,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy { min_delay: Duration::from_secs(1), max_delay: Duration::from_secs(300), max_attempts: 8 }
    }
}

impl RetryPolicy {
    /// The delays between attempts: at most `max_attempts - 1` of them.
    pub(crate) fn delays(&self) -> FullJitter {
        let max = self.max_delay.max(self.min_delay);
        let exp = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .build();
        FullJitter { exp, min: self.min_delay, rng: SplitMix::seeded() }
    }

    /// The delay to sleep after `err` when backoff proposed `proposed`: never less than
    /// the server's `Retry-After`, which is capped at `max_delay`.
    pub(crate) fn honour_retry_after(&self, proposed: Duration, err: &FetchError) -> Duration {
        match err.retry_after() {
            Some(asked) => proposed.max(asked.min(self.max_delay)),
            None => proposed,
        }
    }
}

/// Full jitter over an exponential sequence: each delay `d` becomes `U[min, d]`.
pub(crate) struct FullJitter {
    exp: <ExponentialBuilder as BackoffBuilder>::Backoff,
    min: Duration,
    rng: SplitMix,
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.exp.next()?;
        let span = d.saturating_sub(self.min);
        Some(self.min + span.mul_f64(self.rng.unit()))
    }
}

/// splitmix64: plenty for spreading retries (no security role), and no extra dependency.
struct SplitMix(u64);

impl SplitMix {
    /// Seeded from std's per-process random hash keys, which differ between devices.
    fn seeded() -> SplitMix {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        SplitMix(h.finish())
    }

    /// Uniform in `[0, 1]`.
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }
}

/// Runs `op` until it succeeds, fails with an error that is not
/// [`FetchError::is_transient`] (or [`FetchError::is_too_slow`], which ends the retries on
/// this mirror), or `policy.max_attempts` attempts are used; returns the
/// last result. Sleeps between attempts as [`RetryPolicy`] describes, and logs each retry
/// at `warn` with the fields `what`, `attempt` (the attempt that failed, from 1), `url`,
/// `delay_ms` and `error`.
///
/// `op` is called afresh for every attempt, so it must not hold state an attempt consumed;
/// for resumable downloads use [`super::Fetcher::download_with_retry`], which resumes from
/// what was stored and resets the attempt budget whenever an attempt made progress.
pub async fn with_backoff<T, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> Result<T, FetchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, FetchError>>,
{
    let mut attempt = 0usize;
    op.retry(policy.delays())
        .sleep(tokio::time::sleep)
        // Below the minimum rate: the mirror is given up for now, not asked again at once.
        .when(|e| e.is_transient() && !e.is_too_slow())
        .adjust(|err, proposed| proposed.map(|d| policy.honour_retry_after(d, err)))
        .notify(|err, delay| {
            attempt += 1;
            log_retry(what, attempt, err, delay);
        })
        .await
}

/// The retry log line shared by [`with_backoff`] and the download loop.
pub(crate) fn log_retry(what: &str, attempt: usize, err: &FetchError, delay: Duration) {
    tracing::warn!(
        what,
        attempt,
        url = err.url().map_or("-", url::Url::as_str),
        delay_ms = delay.as_millis() as u64,
        error = %err,
        "fetch failed; retrying"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_within_floor_and_exponential_ceiling() {
        let policy =
            RetryPolicy { min_delay: Duration::from_secs(1), max_delay: Duration::from_secs(20), max_attempts: 8 };
        let mut spread = false;
        for _ in 0..50 {
            let delays: Vec<Duration> = policy.delays().collect();
            assert_eq!(delays.len(), 7);
            for (i, d) in delays.iter().enumerate() {
                let ceiling = Duration::from_secs(1 << i).min(policy.max_delay);
                assert!(*d >= policy.min_delay && *d <= ceiling, "delay {i}: {d:?}");
                spread |= *d < ceiling.mul_f64(0.9) && i > 1;
            }
        }
        assert!(spread, "jitter never drew a delay well below the ceiling");
        assert_eq!(RetryPolicy { max_attempts: 1, ..policy.clone() }.delays().count(), 0);
        assert_eq!(RetryPolicy { max_attempts: 0, ..policy }.delays().count(), 0);
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_max() {
        let policy = RetryPolicy { max_delay: Duration::from_secs(10), ..RetryPolicy::default() };
        let url = url::Url::parse("http://m/i").expect("url");
        let busy = |secs| FetchError::Status {
            url: url.clone(),
            status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(Duration::from_secs(secs)),
        };
        let one = Duration::from_secs(1);
        assert_eq!(policy.honour_retry_after(one, &busy(2)), Duration::from_secs(2));
        assert_eq!(policy.honour_retry_after(Duration::from_secs(5), &busy(2)), Duration::from_secs(5));
        assert_eq!(policy.honour_retry_after(one, &busy(3600)), Duration::from_secs(10));
    }
}
