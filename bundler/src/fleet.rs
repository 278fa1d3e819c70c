//! `bundler fleet`: what every device last reported (channel, labels, applied release,
//! health, last seen, last failure, drift) and, given the mirror, which release is still
//! pending for it; then per release, how the fleet took it (running it, applied, healthy,
//! rolled back), with halt advice where the share of devices that rolled a release back is
//! over `--max-failure-ratio`, and the rollout state of each channel's latest release.
//! Read-only; `--json` for tools.
//!
//! The pending column trusts only what verifies: the mirror's trust history is walked from
//! `root.1` and each channel index is checked against it. A channel whose index does not
//! verify shows `?` (and a warning), never a release number.
//!
//! Everything a device sent is shown with control characters replaced, so a device cannot
//! write terminal escapes into the operator's terminal.

use anyhow::Result;
use clap::Args;
use ferry_proto::{ChannelName, Limits};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fleetdb::{DeviceRow, FleetDb};
use crate::mirror::Mirror;

/// `bundler fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Fleet database.
    #[arg(long)]
    db: PathBuf,
    /// Mirror directory: show each device's pending release from the verified channel index.
    #[arg(long)]
    mirror: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Advise halting a release when more than this share of the devices that tried it
    /// rolled it back (as `bundler rollout` refuses to widen then).
    #[arg(long, default_value_t = crate::rollout_cmd::DEFAULT_MAX_FAILURE_RATIO)]
    max_failure_ratio: f64,
}

/// What a channel's verified index says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChannelLatest {
    /// The latest release.
    Release { release: u64, halted: bool, rollout: String },
    /// No index, or an index without a release.
    Nothing,
    /// The index did not verify.
    Unverified,
}

/// Runs `bundler fleet`.
pub fn run(args: &FleetArgs) -> Result<()> {
    let db = FleetDb::open_existing(&args.db)?;
    let devices = db.devices()?;
    let releases = db.release_summary()?;
    let latest = match &args.mirror {
        Some(dir) => Some(latest_releases(&Mirror::new(dir), &devices)?),
        None => None,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let pending = |d: &DeviceRow| -> Option<&ChannelLatest> { latest.as_ref()?.get(d.channel.as_deref()?) };

    if args.json {
        let devices: Vec<Value> = devices
            .iter()
            .map(|d| {
                let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
                if let (Some(map), true) = (v.as_object_mut(), latest.is_some()) {
                    let (latest_release, pending_release) = match pending(d) {
                        Some(ChannelLatest::Release { release, .. }) => {
                            (json!(release), json!(is_pending(d, *release).then_some(release)))
                        }
                        _ => (Value::Null, Value::Null),
                    };
                    map.insert("latest_release".into(), latest_release);
                    map.insert("pending".into(), pending_release);
                }
                v
            })
            .collect();
        let releases: Vec<Value> = releases
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Some(map) = v.as_object_mut() {
                    map.insert("failure_ratio".into(), json!(crate::rollout_cmd::failure_ratio(r)));
                    map.insert("advice".into(), json!(advice(r, args.max_failure_ratio)));
                    map.insert("rollout".into(), json!(rollout_of(latest.as_ref(), r)));
                }
                v
            })
            .collect();
        let out = json!({ "now": now, "devices": devices, "releases": releases });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    if devices.is_empty() {
        println!("no devices enrolled");
    } else {
        let mut headers =
            vec!["DEVICE", "CHANNEL", "LABELS", "RELEASE", "HEALTH", "LAST-SEEN", "LAST-FAILURE", "DRIFT"];
        if latest.is_some() {
            headers.push("PENDING");
        }
        let mut table = Table::new(&headers);
        for d in &devices {
            let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut health = d.health.clone().unwrap_or_else(|| "-".into());
            if d.paused {
                health.push_str(" (paused)");
            }
            let mut row = vec![
                d.device_id.clone(),
                d.channel.clone().unwrap_or_else(|| "-".into()),
                if labels.is_empty() { "-".into() } else { labels.join(",") },
                d.release.map_or("-".into(), |r| r.to_string()),
                health,
                d.last_seen.map_or("never".into(), |t| ago(t, now)),
                d.last_failure.clone().unwrap_or_else(|| "-".into()),
                if d.drift_paths == 0 { "-".into() } else { format!("{} paths", d.drift_paths) },
            ];
            if latest.is_some() {
                row.push(match pending(d) {
                    Some(ChannelLatest::Release { release, halted, .. }) if is_pending(d, *release) => {
                        format!("pending {release}{}", if *halted { " (halted)" } else { "" })
                    }
                    Some(ChannelLatest::Unverified) => "?".into(),
                    _ => "-".into(),
                });
            }
            table.row(row);
        }
        table.print();
    }
    println!();
    if releases.is_empty() {
        println!("no releases reported yet");
    } else {
        let mut headers = vec!["CHANNEL", "RELEASE", "CURRENT", "APPLIED", "HEALTHY", "ROLLED-BACK"];
        if latest.is_some() {
            headers.push("ROLLOUT");
        }
        headers.push("ADVICE");
        let mut table = Table::new(&headers);
        for r in &releases {
            let mut row = vec![
                r.channel.clone(),
                r.release.to_string(),
                r.current.to_string(),
                r.applied.to_string(),
                r.healthy.to_string(),
                r.rolled_back.to_string(),
            ];
            if latest.is_some() {
                row.push(rollout_of(latest.as_ref(), r).unwrap_or_else(|| "-".into()));
            }
            row.push(advice(r, args.max_failure_ratio).unwrap_or_else(|| "-".into()));
            table.row(row);
        }
        table.print();
    }
    Ok(())
}

/// `halt: 3 of 20 rolled back (15%)` when the failure ratio is over `max`.
fn advice(r: &crate::fleetdb::ReleaseSummary, max: f64) -> Option<String> {
    let ratio = crate::rollout_cmd::failure_ratio(r)?;
    (ratio > max).then(|| {
        format!("halt: {} of {} rolled back ({:.0}%)", r.rolled_back, r.applied + r.rolled_back, ratio * 100.0)
    })
}

/// The rollout state, for the release a channel's index names as its latest.
fn rollout_of(latest: Option<&BTreeMap<String, ChannelLatest>>, r: &crate::fleetdb::ReleaseSummary) -> Option<String> {
    match latest?.get(&r.channel)? {
        ChannelLatest::Release { release, rollout, .. } if *release == r.release => Some(rollout.clone()),
        _ => None,
    }
}

fn is_pending(d: &DeviceRow, latest: u64) -> bool {
    d.release.is_none_or(|r| r < latest)
}

/// The latest release of every channel the devices follow, from the verified indexes.
fn latest_releases(mirror: &Mirror, devices: &[DeviceRow]) -> Result<BTreeMap<String, ChannelLatest>> {
    let limits = Limits::default();
    let root = mirror.trusted_root(None, &limits)?;
    let mut out = BTreeMap::new();
    for name in devices.iter().filter_map(|d| d.channel.as_deref()) {
        if out.contains_key(name) {
            continue;
        }
        let latest = match name.parse::<ChannelName>() {
            Err(_) => ChannelLatest::Nothing,
            Ok(channel) => match mirror.index(&root, &channel, &limits) {
                Ok(Some(index)) => match &index.latest {
                    Some(l) => ChannelLatest::Release {
                        release: l.release,
                        halted: index.halted,
                        rollout: crate::rollout_cmd::describe(&index),
                    },
                    None => ChannelLatest::Nothing,
                },
                Ok(None) => ChannelLatest::Nothing,
                Err(e) => {
                    eprintln!("bundler: warning: channel {channel}: {e:#}");
                    ChannelLatest::Unverified
                }
            },
        };
        out.insert(name.to_owned(), latest);
    }
    Ok(out)
}

/// `3m ago`, `5h ago`, `2d ago`.
pub fn ago(then: u64, now: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        3600..=86_399 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86_400),
    }
}

/// A left-aligned text table; cells have control characters replaced.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table { rows: vec![headers.iter().map(|h| h.to_string()).collect()] }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| printable(&c)).collect());
    }

    /// Prints it to stdout.
    pub fn print(&self) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| self.rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                }
            }
            println!("{}", line.trim_end());
        }
    }
}

/// Replaces control characters (terminal escapes, newlines) with `?`.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::{ago, printable};

    #[test]
    fn relative_times_and_escapes() {
        assert_eq!(ago(1000, 1000), "0s ago");
        assert_eq!(ago(1000, 1000 + 180), "3m ago");
        assert_eq!(ago(1000, 1000 + 5 * 3600 + 7), "5h ago");
        assert_eq!(ago(1000, 1000 + 3 * 86_400), "3d ago");
        assert_eq!(ago(2000, 1000), "0s ago");
        assert_eq!(printable("ok\x1b[31mred\n"), "ok?[31mred?");
    }
}
