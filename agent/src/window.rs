//! Maintenance windows: when a device may apply a release, in device local time.
//!
//! Written in the config as `apply_window = ["Sat 02:00-04:00", "Mon-Fri 22:30-01:00"]`:
//! optional days (`Mon`, `Sat,Sun`, `Mon-Fri`, `Fri-Mon`, `daily`), then `HH:MM-HH:MM`. A
//! window whose end is not after its start runs past midnight into the next day (its days
//! name the day it opens). `24:00` ends a window at midnight. No windows: any time.
//!
//! Local time comes from the system time zone (`TZ`, else `/etc/localtime`), through jiff;
//! a window's bounds are civil times, so on a day the clocks change it is as long as the
//! wall clock says. Downloads ignore windows; only the start of an apply waits for one.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One window: the days it opens on (Monday first) and its span in minutes of the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyWindow {
    text: String,
    days: [bool; 7],
    start: u16,
    minutes: u16,
}

/// A window that does not parse; the message names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("apply window {text:?}: {why} (expected e.g. \"Sat 02:00-04:00\" or \"Mon-Fri 22:00-01:00\")")]
pub struct WindowError {
    text: String,
    why: String,
}

impl std::str::FromStr for ApplyWindow {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Self, WindowError> {
        let fail = |why: &str| WindowError { text: text.to_string(), why: why.to_string() };
        let mut parts = text.split_whitespace();
        let (days, span) = match (parts.next(), parts.next(), parts.next()) {
            (Some(span), None, None) => ("daily", span),
            (Some(days), Some(span), None) => (days, span),
            _ => return Err(fail("want optional days and one time span")),
        };
        let days = parse_days(days).map_err(|w| fail(&w))?;
        let (from, to) = span.split_once('-').ok_or_else(|| fail("the time span needs a '-'"))?;
        let start = parse_minute(from).map_err(|w| fail(&w))?;
        let end = parse_minute(to).map_err(|w| fail(&w))?;
        if start >= 24 * 60 {
            return Err(fail("a window cannot start at 24:00"));
        }
        let minutes = if end > start { end - start } else { end + 24 * 60 - start };
        if minutes == 24 * 60 && end == start {
            return Err(fail("start and end are the same time; leave apply_window out to allow any time"));
        }
        Ok(ApplyWindow { text: text.to_string(), days, start, minutes })
    }
}

fn parse_days(s: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if s.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    let day = |name: &str| -> Result<usize, String> {
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("{name:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun or daily)"))
    };
    for item in s.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day(item)?] = true,
        }
    }
    Ok(days)
}

/// `HH:MM` as minutes of the day; `24:00` allowed (as an end).
fn parse_minute(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl ApplyWindow {
    /// As written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The window's opening and closing instants for the one that opens on `date`, if it
    /// opens that day.
    fn on(&self, date: Date, tz: &TimeZone) -> Option<(i64, i64)> {
        if !self.days[date.weekday().to_monday_zero_offset() as usize] {
            return None;
        }
        let start = date.to_datetime(Time::midnight()).checked_add(i64::from(self.start).minutes()).ok()?;
        let end = start.checked_add(i64::from(self.minutes).minutes()).ok()?;
        let open = start.to_zoned(tz.clone()).ok()?.timestamp().as_second();
        let close = end.to_zoned(tz.clone()).ok()?.timestamp().as_second();
        Some((open, close))
    }
}

/// A device's windows; empty means any time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyWindows(pub Vec<ApplyWindow>);

impl ApplyWindows {
    /// Whether an apply may start at `now` (Unix seconds) in time zone `tz`.
    pub fn is_open(&self, now: u64, tz: &TimeZone) -> bool {
        self.0.is_empty() || self.open_until(now, tz).is_some()
    }

    /// When the window open at `now` closes, if one is open.
    pub fn open_until(&self, now: u64, tz: &TimeZone) -> Option<u64> {
        let now = i64::try_from(now).ok()?;
        let today = Timestamp::from_second(now).ok()?.to_zoned(tz.clone()).date();
        // A window opening yesterday may still run past midnight.
        let days = [today.yesterday().ok()?, today];
        self.0
            .iter()
            .flat_map(|w| days.iter().filter_map(move |d| w.on(*d, tz)))
            .filter(|(open, close)| *open <= now && now < *close)
            .map(|(_, close)| close as u64)
            .max()
    }

    /// The next instant after `now` at which a window opens (within eight days).
    pub fn next_open(&self, now: u64, tz: &TimeZone) -> Option<u64> {
        let now_s = i64::try_from(now).ok()?;
        let mut day = Timestamp::from_second(now_s).ok()?.to_zoned(tz.clone()).date();
        let mut best: Option<i64> = None;
        for _ in 0..9 {
            for w in &self.0 {
                if let Some((open, _)) = w.on(day, tz) {
                    if open > now_s && best.is_none_or(|b| open < b) {
                        best = Some(open);
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        best.map(|b| b as u64)
    }

    /// The windows as written, for messages.
    pub fn describe(&self) -> String {
        self.0.iter().map(ApplyWindow::as_str).collect::<Vec<_>>().join(", ")
    }
}

/// A Unix time as device local time, for messages (`2026-11-28 02:00 +01:00`).
pub fn local_time(secs: u64, tz: &TimeZone) -> String {
    match i64::try_from(secs).ok().and_then(|s| Timestamp::from_second(s).ok()) {
        Some(t) => t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M %:z").to_string(),
        None => secs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(list: &[&str]) -> ApplyWindows {
        ApplyWindows(list.iter().map(|w| w.parse().expect("valid window")).collect())
    }

    /// Unix seconds of a civil time in `tz`.
    fn at(tz: &TimeZone, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> u64 {
        jiff::civil::date(y, mo, d).at(h, mi, 0, 0).to_zoned(tz.clone()).expect("valid").timestamp().as_second() as u64
    }

    #[test]
    fn a_saturday_window_opens_only_then() {
        let tz = TimeZone::UTC;
        let w = windows(&["Sat 02:00-04:00"]);
        // 2026-11-28 is a Saturday.
        assert!(!w.is_open(at(&tz, 2026, 11, 28, 1, 59), &tz));
        assert!(w.is_open(at(&tz, 2026, 11, 28, 2, 0), &tz));
        assert!(w.is_open(at(&tz, 2026, 11, 28, 3, 59), &tz));
        assert!(!w.is_open(at(&tz, 2026, 11, 28, 4, 0), &tz));
        assert!(!w.is_open(at(&tz, 2026, 11, 27, 3, 0), &tz));
        assert_eq!(w.next_open(at(&tz, 2026, 11, 27, 12, 0), &tz), Some(at(&tz, 2026, 11, 28, 2, 0)));
        assert_eq!(w.next_open(at(&tz, 2026, 11, 28, 3, 0), &tz), Some(at(&tz, 2026, 12, 5, 2, 0)));
        assert_eq!(w.open_until(at(&tz, 2026, 11, 28, 3, 0), &tz), Some(at(&tz, 2026, 11, 28, 4, 0)));
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_opens() {
        let tz = TimeZone::UTC;
        let w = windows(&["Fri 23:00-01:00"]);
        assert!(w.is_open(at(&tz, 2026, 11, 27, 23, 30), &tz));
        assert!(w.is_open(at(&tz, 2026, 11, 28, 0, 30), &tz));
        assert!(!w.is_open(at(&tz, 2026, 11, 28, 1, 0), &tz));
        assert!(!w.is_open(at(&tz, 2026, 11, 28, 23, 30), &tz), "Saturday evening is not Friday's");
    }

    #[test]
    fn windows_are_in_local_time() {
        let tz = TimeZone::posix("XST-3").expect("posix tz"); // UTC+3 all year
        let w = windows(&["daily 02:00-03:00"]);
        assert!(w.is_open(at(&TimeZone::UTC, 2026, 11, 27, 23, 30), &tz));
        assert!(!w.is_open(at(&TimeZone::UTC, 2026, 11, 28, 2, 30), &tz));
        assert_eq!(local_time(at(&tz, 2026, 11, 28, 2, 0), &tz), "2026-11-28 02:00 +03:00");
    }

    #[test]
    fn days_lists_ranges_and_wrapping_ranges() {
        let tz = TimeZone::UTC;
        let weekend = windows(&["Sat,Sun 10:00-11:00"]);
        let wrap = windows(&["Fri-Mon 10:00-11:00"]);
        let weekdays = windows(&["mon-fri 10:00-24:00"]);
        // 2026-11-23 is a Monday.
        let open: Vec<bool> = (23..30).map(|d| weekend.is_open(at(&tz, 2026, 11, d, 10, 30), &tz)).collect();
        assert_eq!(open, [false, false, false, false, false, true, true]);
        let open: Vec<bool> = (23..30).map(|d| wrap.is_open(at(&tz, 2026, 11, d, 10, 30), &tz)).collect();
        assert_eq!(open, [true, false, false, false, true, true, true]);
        assert!(weekdays.is_open(at(&tz, 2026, 11, 27, 23, 59), &tz));
        assert!(!weekdays.is_open(at(&tz, 2026, 11, 28, 0, 0), &tz));
    }

    #[test]
    fn no_windows_means_any_time() {
        assert!(ApplyWindows::default().is_open(0, &TimeZone::UTC));
    }

    #[test]
    fn bad_windows_are_refused_with_the_reason() {
        for (text, why) in [
            ("Sat", "'-'"),
            ("Caturday 02:00-04:00", "not a day"),
            ("Sat 2:00-4", "not a time"),
            ("Sat 25:00-26:00", "not a time"),
            ("Sat 02:60-03:00", "not a time"),
            ("Sat 24:00-01:00", "cannot start at 24:00"),
            ("Sat 02:00-02:00", "same time"),
            ("Sat 02:00-03:00 extra", "one time span"),
            ("", "one time span"),
        ] {
            let e = text.parse::<ApplyWindow>().expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
