//! `bundler reports import DIR`: the USB path home for reports. A device's
//! `ferry-agent export-reports DIR` leaves `DIR/reports/<device-id>/*.batch` (each file a
//! zstd-compressed signed batch, the same bytes it would POST); this ingests each with
//! exactly the checks of `POST /v1/reports` ([`crate::ingest::ingest`]), then writes
//! `DIR/acks/<device-id>.ack` (`{"device_id": "…", "acked": N}`, atomically) so the device
//! deletes what is stored at its next contact with the stick.
//!
//! A device's batches are ingested oldest first (by their first sequence number), so a
//! later batch can never make an earlier one look like a replay. Importing the same stick
//! twice is harmless: the second time every batch is a replay and the acks are rewritten
//! with the same numbers. The stick is untrusted: every file is read with a size cap and
//! only a verified batch names the device whose ack is written.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fleetdb::FleetDb;
use crate::ingest::{ingest, peek_first_seq, IngestError, MAX_COMPRESSED};
use crate::mirror::Mirror;

/// `bundler reports`.
#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// Ingest the report batches devices left on a USB stick and write their acks.
    Import(ImportArgs),
}

/// `acks/<device-id>.ack`: what the device may delete.
#[derive(Debug, serde::Serialize)]
struct AckFile<'a> {
    device_id: &'a str,
    acked: u64,
}

/// `bundler reports import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The directory devices exported to (holding `reports/<device-id>/*.batch`).
    dir: PathBuf,
    /// Fleet database (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Enroll an unknown device with the key its first valid batch is signed with.
    #[arg(long)]
    enroll_on_first_use: bool,
}

/// Runs `bundler reports …`; false when a batch was rejected (a replay is not a failure).
pub fn run(command: &ReportsCommand) -> Result<bool> {
    match command {
        ReportsCommand::Import(args) => import(args),
    }
}

fn import(args: &ImportArgs) -> Result<bool> {
    if !args.dir.is_dir() {
        anyhow::bail!("{} is not a directory", args.dir.display());
    }
    let files = batch_files(&args.dir)?;
    if files.is_empty() {
        println!("no report batches under {}", args.dir.join("reports").display());
        return Ok(true);
    }
    let mut db = FleetDb::open(&args.db)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut acks: BTreeMap<String, u64> = BTreeMap::new();
    let (mut stored, mut records, mut rejected) = (0usize, 0usize, 0usize);
    for (shown, path) in files {
        let bytes = match read_capped(&path) {
            Ok(b) => b,
            Err(e) => {
                println!("REJECTED {shown}: io: {e}");
                rejected += 1;
                continue;
            }
        };
        match ingest(&mut db, &bytes, args.enroll_on_first_use, now) {
            Ok(a) => {
                let enrolled = if a.enrolled { ", enrolled on first use" } else { "" };
                println!(
                    "OK {shown}: device {}, {} new records, acked {}{enrolled}",
                    a.device_id, a.new_records, a.acked
                );
                tracing::info!(device = %a.device_id, acked = a.acked, records = a.new_records, "report batch imported");
                acks.insert(a.device_id.to_string(), a.acked);
                stored += 1;
                records += a.new_records;
            }
            Err(IngestError::Replay { device, acked }) => {
                println!("REJECTED {shown}: replay: every record is already stored (device {device}, acked {acked})");
                tracing::info!(device = %device, acked, "report batch is a replay");
                acks.insert(device.to_string(), acked);
            }
            Err(IngestError::Db(e)) => return Err(e).context("storing report batches"),
            Err(e) => {
                let message = e.to_string();
                // Always `<reason>: <message>`, whatever the message starts with.
                let prefix = format!("{}: ", e.code());
                let line = if message.starts_with(&prefix) { message } else { format!("{prefix}{message}") };
                println!("REJECTED {shown}: {line}");
                tracing::warn!(device = e.device().unwrap_or("?"), reason = e.code(), file = %shown, "report batch refused: {e}");
                rejected += 1;
            }
        }
    }
    let out = Mirror::new(&args.dir);
    for (device, acked) in &acks {
        let rel = format!("acks/{device}.ack");
        let body = serde_json::to_string(&AckFile { device_id: device, acked: *acked })?;
        out.write(&rel, format!("{body}\n").as_bytes()).with_context(|| format!("writing {rel}"))?;
        println!("ack {rel}: acked {acked}");
    }
    println!("imported {stored} batch(es) ({records} new records) from {} device(s); {rejected} rejected", acks.len());
    Ok(rejected == 0)
}

/// `(shown path, path)` of every `reports/<device>/*.batch`, each device's oldest first
/// (each file is peeked here and read again when ingested, so memory stays at one batch).
fn batch_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let reports = dir.join("reports");
    let mut devices: Vec<PathBuf> = match fs::read_dir(&reports) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("listing {}", reports.display())),
    };
    devices.sort();
    let mut out = Vec::new();
    for device in devices {
        let listing = fs::read_dir(&device).with_context(|| format!("listing {}", device.display()))?;
        let mut batches: Vec<(u64, String, String, PathBuf)> = Vec::new();
        for entry in listing {
            let path = entry.with_context(|| format!("listing {}", device.display()))?.path();
            if path.extension().is_none_or(|e| e != "batch") {
                continue;
            }
            let shown = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
            let order = read_capped(&path).ok().and_then(|b| peek_first_seq(&b)).unwrap_or(u64::MAX);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            batches.push((order, name, shown, path));
        }
        batches.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out.extend(batches.into_iter().map(|(_, _, shown, path)| (shown, path)));
    }
    Ok(out)
}

/// Reads at most one byte past the batch cap (ingest refuses larger files by size).
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_COMPRESSED as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}
