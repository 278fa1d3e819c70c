//! `bundler rollout`: widens, narrows, halts or resumes the staged rollout of a channel's
//! latest release by re-signing its index only — no new release, nothing else changed.
//! Devices decide from the signed index whether they are in (see
//! [`ferry_proto::rollout`]); devices that already applied a halted release stay on it.
//!
//! Widening is guarded: it needs the fleet database (`--db`) and is refused when the
//! share of devices that rolled the release back is over `--max-failure-ratio`, unless
//! `--force`. Halting and narrowing are never refused.

use anyhow::{bail, Result};
use clap::Args;
use ferry_proto::index::ChannelIndex;
use ferry_proto::ChannelName;
use std::path::PathBuf;

use crate::fleetdb::{FleetDb, ReleaseSummary};
use crate::index_cmd::{resign, IndexSigning};

/// Default for `--max-failure-ratio`.
pub const DEFAULT_MAX_FAILURE_RATIO: f64 = 0.05;

/// `bundler rollout`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["percent", "halt"])))]
pub struct RolloutArgs {
    #[command(flatten)]
    signing: IndexSigning,
    /// Share of devices (0-100 %) that may take the latest release; also resumes a halted
    /// rollout. Devices already in stay in when it widens.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    percent: Option<u8>,
    /// Stop further uptake of the latest release; devices that applied it stay on it.
    #[arg(long)]
    halt: bool,
    /// Fleet database (`bundler serve --db` / `reports import --db`): widening checks the
    /// failure ratio there.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Refuse to widen when more than this share of the devices that tried the release
    /// rolled it back.
    #[arg(long, default_value_t = DEFAULT_MAX_FAILURE_RATIO, value_parser = parse_ratio)]
    max_failure_ratio: f64,
    /// Widen even without a fleet database or over the failure ratio.
    #[arg(long)]
    force: bool,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1 (e.g. 0.05)")),
    }
}

/// Of the devices that tried a release, the share that rolled it back; `None` before any
/// device reported on it.
pub fn failure_ratio(s: &ReleaseSummary) -> Option<f64> {
    let tried = s.applied + s.rolled_back;
    (tried > 0).then(|| s.rolled_back as f64 / tried as f64)
}

/// Runs `bundler rollout`.
pub fn run(args: &RolloutArgs) -> Result<()> {
    let (old, index) = resign(&args.signing, |index| {
        let Some(latest) = &index.latest else {
            bail!("channel {} has no release to roll out yet", index.channel);
        };
        let (percent, halted) = match args.percent {
            Some(p) => (p, false),
            None => (index.rollout_percent, true),
        };
        let widening = !halted && (percent > index.rollout_percent || (index.halted && percent > 0));
        if widening {
            check_failures(args, &index.channel, latest.release)?;
        }
        index.rollout_percent = percent;
        index.halted = halted;
        Ok(())
    })?;
    println!(
        "channel {} release {}: {} -> {} (index version {}, expires {})",
        index.channel,
        index.latest.as_ref().map_or(0, |l| l.release),
        describe(&old),
        describe(&index),
        index.version,
        crate::clock::rfc3339(index.expires)
    );
    Ok(())
}

/// `50%`, `halted at 10%`.
pub fn describe(index: &ChannelIndex) -> String {
    if index.halted {
        format!("halted at {}%", index.rollout_percent)
    } else {
        format!("{}%", index.rollout_percent)
    }
}

/// Refuses to widen over the failure ratio (or blind), unless forced.
fn check_failures(args: &RolloutArgs, channel: &ChannelName, release: u64) -> Result<()> {
    let Some(db) = &args.db else {
        if args.force {
            eprintln!("bundler: warning: widening without a fleet database (--force): failure ratio not checked");
            return Ok(());
        }
        bail!("widening a rollout checks the fleet's failures: pass --db FLEETDB (or --force to widen blind)");
    };
    let db = FleetDb::open_existing(db)?;
    let summary = db.release_summary()?.into_iter().find(|s| s.channel == channel.as_str() && s.release == release);
    let Some((s, ratio)) = summary.as_ref().and_then(|s| Some((s, failure_ratio(s)?))) else {
        eprintln!("bundler: note: no device has reported trying release {release} yet");
        return Ok(());
    };
    if ratio > args.max_failure_ratio {
        let what = format!(
            "release {release} of {}: {} of {} devices that tried it rolled back ({:.1}%), over --max-failure-ratio {}",
            channel,
            s.rolled_back,
            s.applied + s.rolled_back,
            ratio * 100.0,
            args.max_failure_ratio
        );
        if !args.force {
            bail!("{what}; halt it with --halt, or widen anyway with --force");
        }
        eprintln!("bundler: warning: {what}; widening anyway (--force)");
    }
    Ok(())
}
