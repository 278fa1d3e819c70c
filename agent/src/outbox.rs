//! The report outbox (DESIGN "Reports"). The store's `events` table *is* the outbox: every
//! event recorded with [`Store::record_event`] is a report record and its `seq` the
//! per-device sequence number. This module reads pending records out as signed,
//! zstd-compressed [`ReportBatch`]es, removes records only when the operator's side
//! acknowledges them (the highest sequence number it stored), and keeps the table within
//! `[reports] max_outbox_bytes`.
//!
//! * **Batches** hold at most [`MAX_BATCH_RECORDS`] records and about [`MAX_BATCH_BYTES`]
//!   of them (and half the envelope limit), so the signed envelope stays well under the
//!   receiver's 1 MiB limit; a message longer than [`MAX_MESSAGE_BYTES`] is cut in the record
//!   (the event keeps it whole). Each batch carries the device's status now.
//! * **Acknowledgements** delete `seq <= acked`, but never beyond the highest sequence this
//!   device ever put into a batch: a confused server, or a stray ack file, cannot make the
//!   device forget records nobody received. The newest failure is kept aside before it is
//!   deleted, so `ferry-agent status` still shows the last error.
//! * **Compaction** (over the cap) removes routine events (no failure reason and not a
//!   finding: `agent-start`, `fetched`, `verified`, `switched`, `trust-rotated`, …) oldest
//!   first. Events with a failure reason and findings (`applied`, `drift`, …) are kept; only
//!   if the cap is still exceeded are *older repeats* of them dropped (same kind, reason and
//!   release as a newer event), which keeps a device that fails the same way every poll for
//!   a year bounded, while the newest of every distinct failure stays. The newest event is
//!   never dropped. What was dropped is counted (`outbox.dropped`) and carried as `dropped`
//!   by every uploaded batch and by the first file of an export: the number compacted since
//!   the last acknowledgement this device applied. It is lowered by what a batch carried
//!   once that batch is acknowledged. (The receiver adds it up for new batches, and for a
//!   batch repeating stored records — its acknowledgement was lost — only the excess over
//!   what the previous batch carried.)

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use ferry_proto::report::{DeviceStatus, ReportBatch, ReportRecord, REPORT_FORMAT};
use ferry_proto::{Reason, SigningKey};

use crate::config::Config;
use crate::failure::Failure;
use crate::metrics::{self, Metric};
use crate::store::{Event, JournalState, Store, StoreError};

/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 500;
/// Most (estimated encoded) record bytes in one batch.
pub const MAX_BATCH_BYTES: usize = 512 << 10;
/// Longest message carried in a record; longer ones are cut.
pub const MAX_MESSAGE_BYTES: usize = 4 << 10;
/// Fixed cost counted per event when measuring the outbox, besides its message.
pub const ROW_OVERHEAD: u64 = 64;
/// zstd level of batch files and upload bodies.
pub const ZSTD_LEVEL: i32 = 3;
/// `Content-Type` of an uploaded batch.
pub const CONTENT_TYPE: &str = "application/x-ferry-report-batch";
/// Setting holding (as JSON) the newest failure event once an acknowledgement removed it.
pub const LAST_FAILURE_KEY: &str = "outbox.last_failure";

const ACKED_KEY: &str = "outbox.acked";
const DROPPED_KEY: &str = "outbox.dropped";
/// `"<last seq> <count>"`: the batch that last carried `outbox.dropped`, and how many.
const DROPPED_SENT_KEY: &str = "outbox.dropped_sent";
/// Highest sequence number ever put into a batch.
const SENT_KEY: &str = "outbox.sent";

/// Event kinds without a failure reason that are findings rather than routine: the first
/// compaction phase keeps them.
pub const NOTABLE_KINDS: &[&str] = &["applied", "drift", "drift-restore", "aborted", "operator-rollback"];

/// True for events compaction removes first.
pub fn is_routine(kind: &str, reason: Option<&str>) -> bool {
    reason.is_none() && !NOTABLE_KINDS.contains(&kind)
}

fn routine_sql() -> String {
    let kinds: Vec<String> = NOTABLE_KINDS.iter().map(|k| format!("'{k}'")).collect();
    format!("reason IS NULL AND kind NOT IN ({})", kinds.join(", "))
}

/// An event's measured size: message bytes plus [`ROW_OVERHEAD`].
const ROW_SIZE_SQL: &str = "(length(CAST(message AS BLOB)) + 64)";

/// What the outbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxState {
    /// Pending records.
    pub records: u64,
    /// Their measured size.
    pub bytes: u64,
    /// Oldest pending sequence number.
    pub first_seq: Option<u64>,
    /// Newest pending sequence number.
    pub last_seq: Option<u64>,
    /// Highest sequence number acknowledged.
    pub acked: u64,
    /// Records compacted away and not yet reported in an acknowledged batch.
    pub dropped: u64,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The acknowledgement applied (the one asked, or less when clamped).
    pub acked: u64,
    /// Records removed.
    pub removed: u64,
    /// True when the acknowledgement named sequence numbers never sent and was lowered.
    pub clamped: bool,
}

/// One signed, compressed batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Its first record's sequence number.
    pub first_seq: u64,
    /// Its last record's sequence number.
    pub last_seq: u64,
    /// Records carried.
    pub records: usize,
    /// The `dropped` count carried.
    pub dropped: u64,
    /// Length of the signed envelope before compression.
    pub envelope_len: usize,
    /// zstd of the envelope: an upload body, or a `.batch` file.
    pub body: Vec<u8>,
}

/// What batches are made with.
#[derive(Debug)]
pub struct BatchPlan<'a> {
    /// The device id (from the config).
    pub device_id: &'a str,
    /// The device key (see [`crate::identity`]).
    pub key: &'a SigningKey,
    /// The device's status, carried by every batch.
    pub status: DeviceStatus,
    /// Most records per batch.
    pub max_records: usize,
    /// Most estimated record bytes per batch.
    pub max_bytes: usize,
    /// Largest signed envelope allowed.
    pub max_envelope: usize,
}

impl<'a> BatchPlan<'a> {
    /// The default plan for this device: its status now, the batch limits above, within
    /// the configured envelope limit and the receiver's 1 MiB.
    pub fn new(cfg: &'a Config, key: &'a SigningKey, store: &Store) -> Result<BatchPlan<'a>, Failure> {
        Ok(BatchPlan {
            device_id: &cfg.device_id,
            key,
            status: device_status(cfg, store)?,
            max_records: MAX_BATCH_RECORDS,
            max_bytes: MAX_BATCH_BYTES.min(cfg.limits.max_envelope / 2),
            max_envelope: cfg.limits.max_envelope.min(ferry_proto::Limits::default().max_envelope),
        })
    }
}

/// The outbox over an open store.
#[derive(Clone, Copy)]
pub struct Outbox<'a> {
    store: &'a Store,
}

impl<'a> Outbox<'a> {
    /// The outbox of `store`.
    pub fn new(store: &'a Store) -> Outbox<'a> {
        Outbox { store }
    }

    fn conn(&self) -> &Connection {
        self.store.conn()
    }

    /// Counts and bounds of what is pending.
    pub fn state(&self) -> Result<OutboxState, StoreError> {
        let (records, bytes, first, last) = self.conn().query_row(
            &format!("SELECT COUNT(*), COALESCE(SUM({ROW_SIZE_SQL}), 0), MIN(seq), MAX(seq) FROM events"),
            [],
            |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?, r.get::<_, Option<i64>>(3)?))
            },
        )?;
        Ok(OutboxState {
            records: records as u64,
            bytes: bytes as u64,
            first_seq: first.map(|s| s as u64),
            last_seq: last.map(|s| s as u64),
            acked: get_u64(self.conn(), ACKED_KEY)?,
            dropped: get_u64(self.conn(), DROPPED_KEY)?,
        })
    }

    /// Brings the outbox within `max_bytes` (see the module docs); returns how many events
    /// were dropped.
    pub fn compact(&self, max_bytes: u64) -> Result<u64, StoreError> {
        let tx = Transaction::new_unchecked(self.conn(), TransactionBehavior::Immediate)?;
        let (total, newest): (i64, Option<i64>) =
            tx.query_row(&format!("SELECT COALESCE(SUM({ROW_SIZE_SQL}), 0), MAX(seq) FROM events"), [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let (total, Some(newest)) = (total as u64, newest) else { return Ok(0) };
        if total <= max_bytes {
            return Ok(0);
        }
        let mut over = total - max_bytes;
        let mut dropped = 0u64;

        // Phase 1: routine events, oldest first, never the newest event.
        let routine = routine_sql();
        let candidates = sizes(
            &tx,
            &format!("SELECT seq, {ROW_SIZE_SQL} FROM events WHERE {routine} AND seq < ?1 ORDER BY seq"),
            newest,
        )?;
        let (cut, freed, n) = take_until(&candidates, over);
        if let Some(cut) = cut {
            dropped += tx
                .execute(&format!("DELETE FROM events WHERE {routine} AND seq < ?1 AND seq <= ?2"), [newest, cut])?
                as u64;
            debug_assert_eq!(dropped, n);
            over = over.saturating_sub(freed);
        }

        // Phase 2: older repeats of the same kind, reason and release, oldest first.
        if over > 0 {
            let repeats = sizes(
                &tx,
                &format!(
                    "SELECT e.seq, {ROW_SIZE_SQL} FROM events e WHERE e.seq < ?1 AND EXISTS (SELECT 1 FROM events n
                       WHERE n.seq > e.seq AND n.kind = e.kind AND n.reason IS e.reason AND n.release IS e.release)
                     ORDER BY e.seq"
                ),
                newest,
            )?;
            let (_, freed, n) = take_until(&repeats, over);
            for (seq, _) in repeats.iter().take(n as usize) {
                dropped += tx.execute("DELETE FROM events WHERE seq = ?1", [seq])? as u64;
            }
            over = over.saturating_sub(freed);
        }
        if dropped > 0 {
            let before = get_u64(&tx, DROPPED_KEY)?;
            set_u64(&tx, DROPPED_KEY, before.saturating_add(dropped))?;
        }
        tx.commit()?;
        if dropped > 0 {
            tracing::info!(dropped, max_bytes, "report outbox over its cap; compacted");
        }
        if over > 0 {
            tracing::warn!(
                max_bytes,
                over,
                "report outbox still over its cap: only distinct failures and findings are left"
            );
        }
        Ok(dropped)
    }

    /// Up to `max_records` pending records after sequence `after`, in order, cut so their
    /// estimated encoded size stays within `max_bytes` (at least one record).
    pub fn records_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<ReportRecord>, StoreError> {
        let mut stmt = self.conn().prepare(
            "SELECT seq, at, kind, release, reason, message FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after as i64, max_records as i64], |r| {
            Ok(ReportRecord {
                seq: r.get::<_, i64>(0)? as u64,
                at: r.get::<_, i64>(1)? as u64,
                kind: r.get(2)?,
                release: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                reason: r.get(4)?,
                message: cut_message(r.get(5)?),
            })
        })?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for rec in rows {
            let rec = rec?;
            let size = estimate(&rec);
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(rec);
        }
        Ok(out)
    }

    /// The next batch of records after sequence `after`, signed and compressed, or `None`
    /// when nothing is pending there. With `carry_dropped` it carries the dropped count and
    /// remembers that it did (an export sets it for its first file only: the files are
    /// acknowledged together).
    pub fn make_batch(&self, after: u64, plan: &BatchPlan, carry_dropped: bool) -> Result<Option<Batch>, Failure> {
        let mut records = self.records_after(after, plan.max_records.max(1), plan.max_bytes)?;
        if records.is_empty() {
            return Ok(None);
        }
        let dropped = if carry_dropped { get_u64(self.conn(), DROPPED_KEY)? } else { 0 };
        let envelope = loop {
            let batch = ReportBatch {
                format: REPORT_FORMAT,
                device_id: plan.device_id.to_string(),
                device_key: plan.key.public(),
                created: crate::store::now(),
                dropped,
                status: plan.status.clone(),
                records,
            };
            let envelope = batch.sign(plan.key);
            if envelope.len() <= plan.max_envelope {
                records = batch.records;
                break envelope;
            }
            if batch.records.len() == 1 {
                return Err(Failure::new(
                    Reason::SizeExceeded,
                    format!("one report record signs to {} bytes, over the envelope limit", envelope.len()),
                ));
            }
            records = batch.records;
            records.truncate(records.len() / 2);
        };
        let (first_seq, last_seq) = (records[0].seq, records[records.len() - 1].seq);
        let body = zstd::bulk::compress(&envelope, ZSTD_LEVEL)
            .map_err(|e| Failure::new(Reason::Io, format!("compressing a report batch: {e}")))?;
        let tx = Transaction::new_unchecked(self.conn(), TransactionBehavior::Immediate).map_err(StoreError::from)?;
        if carry_dropped && dropped > 0 {
            set_setting(&tx, DROPPED_SENT_KEY, &format!("{last_seq} {dropped}"))?;
        }
        let sent = get_u64(&tx, SENT_KEY)?;
        set_u64(&tx, SENT_KEY, sent.max(last_seq))?;
        tx.commit().map_err(StoreError::from)?;
        Ok(Some(Batch { first_seq, last_seq, records: records.len(), dropped, envelope_len: envelope.len(), body }))
    }

    /// Applies an acknowledgement: removes every record up to `acked` (clamped to the
    /// highest sequence ever sent), and clears the dropped count once the batch that carried
    /// it is covered.
    pub fn acknowledge(&self, acked: u64) -> Result<Ack, StoreError> {
        let tx = Transaction::new_unchecked(self.conn(), TransactionBehavior::Immediate)?;
        let sent = get_u64(&tx, SENT_KEY)?;
        let effective = acked.min(sent);
        let newest_failure = tx
            .query_row(
                &format!(
                    "SELECT seq, at, kind, release, reason, message FROM events WHERE {}
                     ORDER BY seq DESC LIMIT 1",
                    crate::store::FAILURE_EVENTS
                ),
                [],
                |r| {
                    Ok(Event {
                        seq: r.get(0)?,
                        at: r.get::<_, i64>(1)? as u64,
                        kind: r.get(2)?,
                        release: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        reason: r.get(4)?,
                        message: r.get(5)?,
                    })
                },
            )
            .optional()?;
        if let Some(e) = newest_failure.filter(|e| e.seq as u64 <= effective) {
            if let Ok(json) = serde_json::to_string(&e) {
                set_setting(&tx, LAST_FAILURE_KEY, &json)?;
            }
        }
        let removed = tx.execute("DELETE FROM events WHERE seq <= ?1", [effective as i64])? as u64;
        let before = get_u64(&tx, ACKED_KEY)?;
        set_u64(&tx, ACKED_KEY, before.max(effective))?;
        let carried: Option<String> =
            tx.query_row("SELECT value FROM settings WHERE key = ?1", [DROPPED_SENT_KEY], |r| r.get(0)).optional()?;
        if let Some((seq, count)) = carried.as_deref().and_then(parse_pair) {
            if effective >= seq {
                let dropped = get_u64(&tx, DROPPED_KEY)?;
                set_u64(&tx, DROPPED_KEY, dropped.saturating_sub(count))?;
                tx.execute("DELETE FROM settings WHERE key = ?1", [DROPPED_SENT_KEY])?;
            }
        }
        crate::crash_point!("outbox::ack-before-commit");
        tx.commit()?;
        Ok(Ack { acked: effective, removed, clamped: acked > sent })
    }
}

/// The device's status for a batch: the applied release and slot, the last apply's health,
/// the newest failure, drift at the last check.
pub fn device_status(cfg: &Config, store: &Store) -> Result<DeviceStatus, Failure> {
    let slots = crate::slots::Slots::open(&cfg.state_dir)?;
    let slot = slots.current()?;
    let applied = match slot {
        Some(s) => slots.read_record(s)?,
        None => None,
    };
    let health = match store.last_journal()?.map(|j| j.state) {
        Some(JournalState::Switching | JournalState::Trial | JournalState::RollingBack) => "trial",
        Some(JournalState::RolledBack) => "rolled-back",
        _ if applied.is_some() => "healthy",
        _ => "none",
    };
    Ok(DeviceStatus {
        channel: cfg.channel.to_string(),
        labels: cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        release: applied.as_ref().map(|r| r.release),
        commit: applied.map(|r| r.commit),
        slot: slot.map(|s| s.to_string()),
        health: health.to_string(),
        last_failure: store.last_failure()?.and_then(|e| e.reason),
        drift_paths: metrics::get(store, Metric::DriftPaths)?,
        paused: crate::hold::paused(store, crate::store::now())?.is_some(),
    })
}

/// A record's encoded size, roughly: its strings plus the varints and tags around them.
fn estimate(r: &ReportRecord) -> usize {
    r.kind.len() + r.message.len() + r.reason.as_ref().map_or(0, String::len) + 32
}

/// Cuts a message to [`MAX_MESSAGE_BYTES`] on a character boundary, marking the cut.
fn cut_message(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// `(seq, size)` rows of a query taking the newest sequence as `?1`.
fn sizes(conn: &Connection, sql: &str, newest: i64) -> Result<Vec<(i64, u64)>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([newest], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The shortest prefix of `rows` whose sizes reach `need`: its last seq, bytes, count.
fn take_until(rows: &[(i64, u64)], need: u64) -> (Option<i64>, u64, u64) {
    let (mut cut, mut freed, mut n) = (None, 0u64, 0u64);
    for (seq, size) in rows {
        if freed >= need {
            break;
        }
        cut = Some(*seq);
        freed += size;
        n += 1;
    }
    (cut, freed, n)
}

fn parse_pair(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(' ')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn get_u64(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    let v: Option<String> =
        conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn set_u64(conn: &Connection, key: &str, value: u64) -> Result<(), StoreError> {
    set_setting(conn, key, &value.to_string())
}

fn set_setting(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO settings(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
