//! The slow-retrieval defence (TUF's "slow retrieval" attack): a mirror that sends a body
//! just fast enough never to trip the stall timeout (a byte every few seconds, or a few
//! KiB/s) would otherwise hold the device on one transfer for hours although a good mirror
//! is configured next.
//!
//! [`MinRate`] is the floor: at least `bytes_per_sec` averaged over every `window` of a
//! body. [`Watchdog`] enforces it next to the stall timeout on every body the fetcher reads
//! (payloads and documents): windows are consecutive, each starts when the previous one is
//! judged, and a window that carried less than `bytes_per_sec × its length` ends the
//! transfer with [`FetchError::TooSlow`], which names the URL and the measured rate. Time
//! spent pacing under the operator's own rate cap counts, so the floor in force is at most
//! half the cap ([`MinRate::under_cap`]) and pacing alone can never trip it.
//!
//! A floor cut is transient (the mirror may be fine later) but not retried on the same
//! mirror: the caller fails over to the next mirror, keeping what was committed, and the
//! download resumes from there (or from the same mirror on the next poll).

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::time::Instant;
use url::Url;

use super::FetchError;

/// The slowest acceptable transfer: at least `bytes_per_sec` over every `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second, more than zero.
    pub bytes_per_sec: u64,
    /// How long the rate is averaged over before it is judged; more than zero.
    pub window: Duration,
}

impl MinRate {
    /// The default floor: 1 KiB/s over 2 minutes. Below what any link worth downloading a
    /// release over carries (GPRS manages several KiB/s), and a window of twice the default
    /// stall timeout, so that a pause the stall timeout tolerates does not trip it alone.
    pub const DEFAULT: MinRate = MinRate { bytes_per_sec: 1024, window: Duration::from_secs(120) };

    /// True when `bytes` in `elapsed` is at least the rate.
    pub fn met_by(&self, bytes: u64, elapsed: Duration) -> bool {
        bytes as f64 >= self.bytes_per_sec as f64 * elapsed.as_secs_f64()
    }

    /// The floor in force under a rate cap of `cap` bytes per second: at most half the cap,
    /// so that pacing can never trip it; `None` when nothing is left.
    pub(crate) fn under_cap(self, cap: Option<u64>) -> Option<MinRate> {
        let bytes_per_sec = cap.map_or(self.bytes_per_sec, |cap| self.bytes_per_sec.min(cap / 2));
        (bytes_per_sec > 0 && !self.window.is_zero()).then_some(MinRate { bytes_per_sec, ..self })
    }
}

/// Whether an attempt that committed `gained` bytes in `elapsed` counts as progress, which
/// resets the retry budget: some bytes, at `floor`'s rate at least. Without the rate, a
/// mirror that sends a few bytes and hangs up, again and again, would never run out of
/// attempts (slow retrieval by reconnection).
pub fn attempt_progressed(floor: Option<MinRate>, gained: u64, elapsed: Duration) -> bool {
    gained > 0 && floor.is_none_or(|f| f.met_by(gained, elapsed))
}

/// A rate for people: `812 B/s`, `4.0 KiB/s`, `1.5 MiB/s`.
pub(crate) fn fmt_rate(bytes_per_sec: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes_per_sec as f64;
    if b < KIB {
        format!("{bytes_per_sec} B/s")
    } else if b < KIB * KIB {
        format!("{:.1} KiB/s", b / KIB)
    } else {
        format!("{:.1} MiB/s", b / (KIB * KIB))
    }
}

/// Guards one body: the stall timeout (no byte for `stall`) and the floor.
pub(super) struct Watchdog<'a> {
    url: &'a Url,
    stall: Duration,
    floor: Option<MinRate>,
    /// When the body last went idle: the last byte arrived (and was paced), or it began.
    idle_since: Instant,
    /// The current window: its start and the bytes it carried.
    window_start: Instant,
    window_bytes: u64,
    /// Bytes of the body received, for messages.
    received: u64,
}

impl<'a> Watchdog<'a> {
    /// Starts watching a body of `url` now.
    pub(super) fn new(url: &'a Url, stall: Duration, floor: Option<MinRate>) -> Watchdog<'a> {
        let now = Instant::now();
        Watchdog { url, stall, floor, idle_since: now, window_start: now, window_bytes: 0, received: 0 }
    }

    /// The next item of `stream`, or [`FetchError::Stall`] when none comes within the stall
    /// timeout of the last byte, or [`FetchError::TooSlow`] when a window ends below the
    /// floor meanwhile.
    pub(super) async fn next<S: Stream + Unpin>(&mut self, stream: &mut S) -> Result<Option<S::Item>, FetchError> {
        loop {
            let stall_at = self.idle_since + self.stall;
            let until = self.floor.map_or(stall_at, |f| stall_at.min(self.window_start + f.window));
            match tokio::time::timeout_at(until, stream.next()).await {
                Ok(item) => return Ok(item),
                Err(_) if Instant::now() >= stall_at => {
                    return Err(FetchError::Stall { url: self.url.clone(), after: self.stall, received: self.received })
                }
                Err(_) => self.judge()?,
            }
        }
    }

    /// Counts `n` bytes that just arrived; judges the window if it is over.
    pub(super) fn arrived(&mut self, n: usize) -> Result<(), FetchError> {
        self.received += n as u64;
        self.window_bytes += n as u64;
        self.judge()
    }

    /// Restarts the stall clock: the receiver is ready for more (after pacing).
    pub(super) fn ready(&mut self) {
        self.idle_since = Instant::now();
    }

    /// Judges the current window once it is over: below the floor ends the transfer, else
    /// the next window starts.
    fn judge(&mut self) -> Result<(), FetchError> {
        let Some(floor) = self.floor else { return Ok(()) };
        let elapsed = self.window_start.elapsed();
        if elapsed < floor.window {
            return Ok(());
        }
        if !floor.met_by(self.window_bytes, elapsed) {
            return Err(FetchError::TooSlow {
                url: self.url.clone(),
                rate: (self.window_bytes as f64 / elapsed.as_secs_f64()) as u64,
                over_ms: elapsed.as_millis().try_into().unwrap_or(u64::MAX),
                min: floor.bytes_per_sec,
                received: self.received,
            });
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_and_caps() {
        let floor = MinRate { bytes_per_sec: 1000, window: Duration::from_secs(10) };
        assert!(floor.met_by(10_000, Duration::from_secs(10)));
        assert!(!floor.met_by(9_999, Duration::from_secs(10)));
        assert!(floor.met_by(500, Duration::from_millis(500)));
        assert_eq!(floor.under_cap(None), Some(floor));
        assert_eq!(floor.under_cap(Some(10_000)), Some(floor));
        assert_eq!(floor.under_cap(Some(1_000)).map(|f| f.bytes_per_sec), Some(500));
        assert_eq!(floor.under_cap(Some(1)), None, "a cap of 1 B/s leaves no floor");
        assert_eq!(MinRate { window: Duration::ZERO, ..floor }.under_cap(None), None);
    }

    #[test]
    fn rates_read_like_rates() {
        assert_eq!(fmt_rate(812), "812 B/s");
        assert_eq!(fmt_rate(4096), "4.0 KiB/s");
        assert_eq!(fmt_rate(3 << 19), "1.5 MiB/s");
    }

    /// Items every `gap`, forever.
    fn trickle(gap: Duration) -> impl Stream<Item = usize> + Unpin {
        Box::pin(futures_util::stream::unfold((), move |()| async move {
            tokio::time::sleep(gap).await;
            Some((100, ()))
        }))
    }

    #[tokio::test]
    async fn a_trickle_is_cut_at_the_end_of_its_window_and_a_steady_body_is_not() {
        let url = Url::parse("http://m/payloads/p").expect("url");
        let floor = Some(MinRate { bytes_per_sec: 500, window: Duration::from_millis(500) });
        // 100 bytes every 50 ms = 2000 B/s: passes window after window.
        let mut steady = trickle(Duration::from_millis(50));
        let mut dog = Watchdog::new(&url, Duration::from_secs(5), floor);
        for _ in 0..40 {
            let n = dog.next(&mut steady).await.expect("steady").expect("endless");
            dog.arrived(n).expect("above the floor");
            dog.ready();
        }
        // 100 bytes every 300 ms = 333 B/s, never stalling: cut when the first window ends.
        let mut slow = trickle(Duration::from_millis(300));
        let start = Instant::now();
        let mut dog = Watchdog::new(&url, Duration::from_secs(5), floor);
        let err = loop {
            let step = match dog.next(&mut slow).await {
                Ok(n) => dog.arrived(n.expect("endless")),
                Err(e) => Err(e),
            };
            match step {
                Ok(()) => dog.ready(),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, FetchError::TooSlow { rate: 100..=400, min: 500, .. }), "{err}");
        assert!(err.is_transient() && err.is_too_slow());
        let secs = start.elapsed().as_secs_f64();
        assert!((0.5..1.0).contains(&secs), "cut after {secs} s");
        let text = err.to_string();
        assert!(text.contains("http://m/payloads/p") && text.contains(" B/s") && text.contains("500 B/s"), "{text}");

        // Nothing at all: the stall timeout, when it comes before the window ends.
        let mut silent = trickle(Duration::from_secs(3600));
        let mut dog = Watchdog::new(&url, Duration::from_millis(200), floor);
        let err = dog.next(&mut silent).await.expect_err("silent");
        assert!(matches!(err, FetchError::Stall { .. }), "{err}");
    }
}
