//! [`FetchError`]: every way a fetch fails, classified for the retry loop (`is_transient`),
//! for the server's pacing (`retry_after`) and for reports (`reason`).
//!
//! The classification is deliberately coarse: anything the network or an overloaded mirror
//! can cause (refused or dropped connections, timeouts, stalls, a body below the minimum
//! rate, 5xx, 429, a body that ends early) is transient; anything that will come out the same on the next try (404, 403, a
//! body larger than the signed size, a redirect we refuse, a storage failure) is not.
//! `Retry-After` is parsed in both of its forms (delay-seconds and IMF-fixdate); the two
//! obsolete date forms are ignored, which only means the normal backoff applies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::Reason;
use reqwest::StatusCode;
use url::Url;

use crate::failure::Failure;

/// Longest `Retry-After` we take from a server before [`crate::fetch::RetryPolicy`] caps it.
const RETRY_AFTER_CEILING: Duration = Duration::from_secs(24 * 3600);

/// A failed fetch. Variants carry the URL that was asked for (not where redirects led).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The HTTP client could not be built (bad proxy URL, unreadable CA bundle, …).
    #[error("HTTP client setup: {detail}")]
    Setup {
        /// What is wrong.
        detail: String,
    },
    /// No connection could be made (DNS, refused, TLS handshake, connect timeout).
    #[error("{url}: cannot connect: {detail}")]
    Connect {
        /// The URL asked for.
        url: Url,
        /// The cause chain in one line.
        detail: String,
    },
    /// Connected, but the response headers did not arrive in time.
    #[error("{url}: no response within {}", humantime::format_duration(*after))]
    Timeout {
        /// The URL asked for.
        url: Url,
        /// How long we waited.
        after: Duration,
    },
    /// The body stopped arriving: no byte for `after` (the stall timeout).
    #[error("{url}: transfer stalled (no data for {}) after {received} bytes", humantime::format_duration(*after))]
    Stall {
        /// The URL asked for.
        url: Url,
        /// The stall timeout.
        after: Duration,
        /// Body bytes received by this request before the stall.
        received: u64,
    },
    /// The body arrived, but slower than the minimum rate (the slow-retrieval defence, see
    /// [`crate::fetch::MinRate`]). Transient, but not worth retrying on the same mirror now.
    #[error(
        "{url}: too slow: {} over {}, below the minimum of {} ({received} bytes received)",
        super::floor::fmt_rate(*rate), humantime::format_duration(Duration::from_secs(over_ms.div_ceil(1000))),
        super::floor::fmt_rate(*min)
    )]
    TooSlow {
        /// The URL asked for.
        url: Url,
        /// The rate measured over the window that failed, bytes per second.
        rate: u64,
        /// How long that window was, in milliseconds (a `Duration` would make every
        /// `Result<_, FetchError>` larger).
        over_ms: u64,
        /// The minimum rate in force, bytes per second.
        min: u64,
        /// Body bytes received by this request.
        received: u64,
    },
    /// The connection failed mid-request or mid-body (reset, closed, malformed framing).
    #[error("{url}: transfer failed: {detail}")]
    Transport {
        /// The URL asked for.
        url: Url,
        /// The cause chain in one line.
        detail: String,
    },
    /// The body ended cleanly but short of what was expected.
    #[error("{url}: body ended at byte {received} of {expected}")]
    Truncated {
        /// The URL asked for.
        url: Url,
        /// Bytes of the file held when the body ended.
        received: u64,
        /// Bytes the file should have.
        expected: u64,
    },
    /// The server answered with a status we cannot use.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL asked for.
        url: Url,
        /// The status.
        status: StatusCode,
        /// The server's `Retry-After` on 429 and 503, if it sent a usable one.
        retry_after: Option<Duration>,
    },
    /// A redirect was refused (more than 5, an https→http downgrade, a non-HTTP scheme).
    #[error("{url}: redirect refused: {detail}")]
    Redirect {
        /// The URL asked for.
        url: Url,
        /// Why.
        detail: String,
    },
    /// More bytes than the cap (the signed size, or a document limit).
    #[error("{url}: larger than the limit of {limit} bytes")]
    SizeExceeded {
        /// The URL asked for.
        url: Url,
        /// The cap in bytes.
        limit: u64,
    },
    /// A response inconsistent with the request (e.g. a `Content-Range` we did not ask for).
    #[error("{url}: unusable response: {detail}")]
    BadResponse {
        /// The URL asked for.
        url: Url,
        /// What was wrong.
        detail: String,
    },
    /// The [`crate::fetch::ChunkSink`] failed to store data.
    #[error("storing download: {0}")]
    Sink(Failure),
}

impl FetchError {
    /// True when trying again later may succeed (network, timeouts, stalls, 5xx, 408, 429,
    /// truncated bodies). False for 4xx, size violations, refused redirects, bad responses
    /// and storage failures.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Timeout { .. }
            | FetchError::Stall { .. }
            | FetchError::TooSlow { .. }
            | FetchError::Transport { .. }
            | FetchError::Truncated { .. } => true,
            FetchError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            FetchError::Setup { .. }
            | FetchError::Redirect { .. }
            | FetchError::SizeExceeded { .. }
            | FetchError::BadResponse { .. }
            | FetchError::Sink(_) => false,
        }
    }

    /// True for a body below the minimum rate: the mirror is given up for now (the next
    /// mirror, or the next poll), not retried at once.
    pub fn is_too_slow(&self) -> bool {
        matches!(self, FetchError::TooSlow { .. })
    }

    /// The delay the server asked for with `Retry-After` (on 429 and 503 only).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The typed reason for reports: `size-exceeded` for size violations, the sink's own
    /// reason for storage failures, `io` for everything network.
    pub fn reason(&self) -> Reason {
        match self {
            FetchError::SizeExceeded { .. } => Reason::SizeExceeded,
            FetchError::Sink(f) => f.reason,
            _ => Reason::Io,
        }
    }

    /// The URL the failed request asked for, when there was one.
    pub fn url(&self) -> Option<&Url> {
        match self {
            FetchError::Connect { url, .. }
            | FetchError::Timeout { url, .. }
            | FetchError::Stall { url, .. }
            | FetchError::TooSlow { url, .. }
            | FetchError::Transport { url, .. }
            | FetchError::Truncated { url, .. }
            | FetchError::Status { url, .. }
            | FetchError::Redirect { url, .. }
            | FetchError::SizeExceeded { url, .. }
            | FetchError::BadResponse { url, .. } => Some(url),
            FetchError::Setup { .. } | FetchError::Sink(_) => None,
        }
    }

    /// Classifies a reqwest error. Its URL is dropped from the detail: ours is in the variant.
    pub(crate) fn from_reqwest(url: &Url, err: reqwest::Error) -> FetchError {
        let url = url.clone();
        let err = err.without_url();
        let detail = chain(&err);
        if err.is_redirect() {
            FetchError::Redirect { url, detail }
        } else if err.is_builder() {
            FetchError::BadResponse { url, detail }
        } else if err.is_connect() {
            FetchError::Connect { url, detail }
        } else {
            // Timeouts of our own are raised as `Timeout`/`Stall`; a reqwest timeout here is
            // the connect timeout surfacing without `is_connect`, which is just as transient.
            FetchError::Transport { url, detail }
        }
    }

    /// The status error for a response, with `Retry-After` parsed on 429 and 503.
    pub(crate) fn status(url: &Url, resp: &reqwest::Response) -> FetchError {
        let status = resp.status();
        let retry_after = if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
        FetchError::Status { url: url.clone(), status, retry_after }
    }
}

impl From<Failure> for FetchError {
    fn from(f: Failure) -> FetchError {
        FetchError::Sink(f)
    }
}

impl From<crate::store::StoreError> for FetchError {
    fn from(e: crate::store::StoreError) -> FetchError {
        FetchError::Sink(Failure::from(e))
    }
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Failure {
        match e {
            FetchError::Sink(f) => f,
            e => Failure::new(e.reason(), e),
        }
    }
}

/// An error and its sources, `: `-separated, in one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// Parses `Retry-After`: delay-seconds, or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`)
/// taken relative to `now` (a date in the past means "now": zero). Capped at a day.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(RETRY_AFTER_CEILING));
    }
    let at = parse_imf_fixdate(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)).min(RETRY_AFTER_CEILING))
}

/// Seconds since the Unix epoch of an IMF-fixdate, the only HTTP-date form senders must use.
fn parse_imf_fixdate(s: &str) -> Option<u64> {
    let mut parts = s.split(' ');
    let weekday = parts.next()?;
    let (day, month, year, time, zone) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || zone != "GMT" || weekday.len() != 4 || !weekday.ends_with(',') {
        return None;
    }
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let num = |t: &str, len: usize| -> Option<u64> {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok()).flatten()
    };
    let (day, year) = (num(day, 2)?, num(year, 4)?);
    let mut hms = time.split(':');
    let (h, m, sec) = (num(hms.next()?, 2)?, num(hms.next()?, 2)?, num(hms.next()?, 2)?);
    if hms.next().is_some() || !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm), for
/// years from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(RETRY_AFTER_CEILING));
        for bad in ["", "-1", "1.5", "soon", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 2026 00:00:00 GMT"), Some(1_767_225_600));
    }

    #[test]
    fn classification() {
        let url = Url::parse("http://m/x").expect("url");
        let status = |s: u16| FetchError::Status {
            url: url.clone(),
            status: StatusCode::from_u16(s).expect("status"),
            retry_after: None,
        };
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(status(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 416] {
            assert!(!status(s).is_transient(), "{s}");
        }
        let big = FetchError::SizeExceeded { url: url.clone(), limit: 1 };
        assert!(!big.is_transient());
        assert_eq!(big.reason(), Reason::SizeExceeded);
        assert_eq!(status(503).reason(), Reason::Io);
        assert!(FetchError::Truncated { url, received: 1, expected: 2 }.is_transient());
    }
}
