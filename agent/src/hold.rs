//! Holds on applying, decided on the device: a pause an operator set there
//! (`ferry-agent pause [--until TIME]`, lifted by `resume` or when TIME passes) and the
//! maintenance windows of the config. A held device still polls, downloads, verifies and
//! reports; only the start of an apply waits. `import --now` overrides a window, never a
//! pause (someone paused this device on purpose; `resume` first).

use jiff::tz::TimeZone;

use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::window;

/// Settings key: the pause, as `indefinite` or the Unix time it ends.
const PAUSE_KEY: &str = "paused_until";
const INDEFINITE: &str = "indefinite";

/// Settings key: the last hold reported, so each is reported once, not on every poll.
const REPORTED_KEY: &str = "hold_reported";

/// Why an apply may not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Paused on the device, until a time or until `resume`.
    Paused { until: Option<u64> },
    /// Outside every maintenance window; the next one opens then (if any within a week).
    OutsideWindow { next_open: Option<u64>, windows: String },
}

impl Hold {
    /// When the hold ends by itself, if it does.
    pub fn ends_at(&self) -> Option<u64> {
        match self {
            Hold::Paused { until } => *until,
            Hold::OutsideWindow { next_open, .. } => *next_open,
        }
    }

    /// One line for status, logs and reports.
    pub fn describe(&self) -> String {
        let tz = TimeZone::system();
        match self {
            Hold::Paused { until: None } => "applying is paused on this device until `ferry-agent resume`".into(),
            Hold::Paused { until: Some(t) } => {
                format!("applying is paused on this device until {}", window::local_time(*t, &tz))
            }
            Hold::OutsideWindow { next_open: Some(t), windows } => {
                format!("outside the apply window ({windows}); the next opens {}", window::local_time(*t, &tz))
            }
            Hold::OutsideWindow { next_open: None, windows } => format!("outside the apply window ({windows})"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Hold::Paused { .. } => "paused",
            Hold::OutsideWindow { .. } => "window",
        }
    }
}

/// Pauses applying, until `until` (Unix seconds) or until [`resume`].
pub fn pause(store: &Store, until: Option<u64>) -> Result<(), StoreError> {
    let value = until.map_or(INDEFINITE.to_string(), |t| t.to_string());
    store.set_setting(PAUSE_KEY, &value)?;
    let message = Hold::Paused { until }.describe();
    store.record_event("paused", None, None, &message)?;
    Ok(())
}

/// Lifts a pause; returns whether one was in force.
pub fn resume(store: &Store, now: u64) -> Result<bool, StoreError> {
    let was = paused(store, now)?.is_some();
    store.clear_setting(PAUSE_KEY)?;
    if was {
        store.record_event("resumed", None, None, "applying resumed")?;
    }
    Ok(was)
}

/// The pause in force at `now`: `Some(until)` (None = until resumed), or None.
pub fn paused(store: &Store, now: u64) -> Result<Option<Option<u64>>, StoreError> {
    Ok(match store.setting(PAUSE_KEY)?.as_deref() {
        None => None,
        Some(INDEFINITE) => Some(None),
        // A pause with an unreadable end stays in force: the safe side of a paused device.
        Some(v) => match v.parse::<u64>() {
            Ok(t) if t <= now => None,
            Ok(t) => Some(Some(t)),
            Err(_) => Some(None),
        },
    })
}

/// Whether an apply may start at `now`: the pause first, then (unless overridden) the windows.
pub fn check(cfg: &Config, store: &Store, now: u64, override_window: bool) -> Result<Option<Hold>, StoreError> {
    if let Some(until) = paused(store, now)? {
        return Ok(Some(Hold::Paused { until }));
    }
    let tz = TimeZone::system();
    if override_window || cfg.apply_windows.is_open(now, &tz) {
        return Ok(None);
    }
    Ok(Some(Hold::OutsideWindow {
        next_open: cfg.apply_windows.next_open(now, &tz),
        windows: cfg.apply_windows.describe(),
    }))
}

/// Records a `held` event for `release`, once per release and kind of hold.
pub fn report_once(store: &Store, release: u64, hold: &Hold) -> Result<(), StoreError> {
    let state = format!("{release}:{}", hold.kind());
    let message = format!("release {release} is ready; {}", hold.describe());
    store.record_event_once(REPORTED_KEY, &state, "held", Some(release), None, &message)?;
    Ok(())
}

/// Reads the end of a pause: a duration from `now` (`3h`, `2days`), a local date and time
/// (`2026-12-01 06:00`), or an RFC 3339 instant (`2026-12-01T05:00:00Z`). Must be in the future.
pub fn parse_until(text: &str, now: u64) -> Result<u64, String> {
    let text = text.trim();
    let until = if let Ok(d) = humantime::parse_duration(text) {
        now.saturating_add(d.as_secs())
    } else if let Ok(t) = text.parse::<jiff::Timestamp>() {
        u64::try_from(t.as_second()).map_err(|_| format!("{text:?} is before 1970"))?
    } else if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        let z = dt.to_zoned(TimeZone::system()).map_err(|e| format!("{text:?}: {e}"))?;
        u64::try_from(z.timestamp().as_second()).map_err(|_| format!("{text:?} is before 1970"))?
    } else {
        return Err(format!(
            "{text:?} is not a time: give a duration (3h), a local time (2026-12-01 06:00) or RFC 3339"
        ));
    };
    if until <= now {
        return Err(format!("{text:?} is not in the future"));
    }
    Ok(until)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_ends_are_read_in_three_forms() {
        let now = 1_795_000_000;
        assert_eq!(parse_until("3h", now), Ok(now + 3 * 3600));
        assert_eq!(parse_until("2100-01-01T00:00:00Z", now), Ok(4_102_444_800));
        assert!(parse_until("2100-01-01 00:00", now).is_ok_and(|t| t.abs_diff(4_102_444_800) <= 14 * 3600));
        assert!(parse_until("2000-01-01T00:00:00Z", now).is_err_and(|e| e.contains("not in the future")));
        assert!(parse_until("tomorrowish", now).is_err_and(|e| e.contains("not a time")));
    }

    #[test]
    fn pause_resume_and_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        assert_eq!(paused(&store, 100).expect("read"), None);
        pause(&store, Some(200)).expect("pause");
        assert_eq!(paused(&store, 100).expect("read"), Some(Some(200)));
        assert_eq!(paused(&store, 200).expect("read"), None, "a pause ends at its time");
        pause(&store, None).expect("pause");
        assert_eq!(paused(&store, u64::MAX).expect("read"), Some(None));
        assert!(resume(&store, 100).expect("resume"));
        assert!(!resume(&store, 100).expect("resume"));
        assert_eq!(paused(&store, 100).expect("read"), None);
    }
}
