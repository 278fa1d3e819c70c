//! Time for documents: Unix seconds, `SOURCE_DATE_EPOCH` honoured for reproducible output,
//! and human durations like `7d` or `12h`.

use anyhow::{Context, Result};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now in Unix seconds, or `SOURCE_DATE_EPOCH` when set.
pub fn now() -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    Ok(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// Parses `30m`, `12h`, `7d`, `1w 2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 12h or 7d: {e}"))
}

/// Formats Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}
