//! The operator's fleet database (one SQLite file, WAL, `synchronous=FULL`): enrolled
//! devices with their public keys and last reported status, and every report record they
//! sent. Schema changes are numbered migrations keyed on `PRAGMA user_version`, as in the
//! agent's store.
//!
//! A batch is stored in one `BEGIN IMMEDIATE` transaction that re-reads the device's
//! enrolment, so `bundler serve` and `bundler reports import` can write the same file at
//! once, and a `kill -9` at any instant leaves either the whole batch or none of it.
//!
//! Acknowledgement is per key epoch: re-enrolling a device with another key (a wiped and
//! re-provisioned device starts its sequence numbers again) opens a new epoch whose
//! acknowledged sequence starts at 0; the old epoch's records stay for history.

use ferry_proto::report::ReportRecord;
use ferry_proto::PublicKey;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::device_id::DeviceId;
use crate::ingest::VerifiedBatch;

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE devices(
    device_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    key_id TEXT NOT NULL,
    key_epoch INTEGER NOT NULL DEFAULT 1,
    enrolled_at INTEGER NOT NULL,
    enrolled_by TEXT NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER,
    status_created INTEGER,
    channel TEXT,
    labels TEXT NOT NULL DEFAULT '[]',
    release INTEGER,
    commit_id TEXT,
    slot TEXT,
    health TEXT,
    last_failure TEXT,
    drift_paths INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    dropped_total INTEGER NOT NULL DEFAULT 0,
    dropped_last INTEGER NOT NULL DEFAULT 0,
    batches INTEGER NOT NULL DEFAULT 0);
CREATE TABLE reports(
    device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT,
    release INTEGER,
    reason TEXT,
    message TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY(device_id, epoch, seq)) WITHOUT ROWID;
CREATE INDEX reports_by_release ON reports(channel, release, kind);
"#];

/// A fleet database failure.
#[derive(Debug, thiserror::Error)]
pub enum FleetDbError {
    /// SQLite failed.
    #[error("fleet database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Opened for reading but absent.
    #[error("no fleet database at {0}: enroll a device or run `bundler serve` first")]
    Missing(PathBuf),
    /// Written by a newer bundler.
    #[error("fleet database schema {found} is newer than this bundler understands ({known})")]
    TooNew { found: i64, known: i64 },
    /// A stored value that cannot be what was written.
    #[error("fleet database holds a damaged row for device {device}: {what}")]
    Damaged { device: String, what: String },
}

/// How a device came to be enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolledBy {
    /// `bundler devices enroll`.
    Operator,
    /// Its first batch, under `--enroll-on-first-use`.
    FirstUse,
}

impl EnrolledBy {
    fn as_str(self) -> &'static str {
        match self {
            EnrolledBy::Operator => "operator",
            EnrolledBy::FirstUse => "first-use",
        }
    }
}

/// A device's enrolled key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledKey {
    /// The public key its batches must be signed with.
    pub key: PublicKey,
    /// Highest sequence number stored in the current key epoch.
    pub acked: u64,
}

/// What `enroll` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrollment {
    /// A new device.
    New,
    /// Already enrolled with this key; nothing changed.
    Unchanged,
    /// Enrolled with another key, now replaced (a new key epoch).
    Replaced { old: String },
    /// Enrolled with another key and `replace` was not asked for; nothing changed.
    Conflict { enrolled: String },
}

/// What storing a verified batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// New records stored; `acked` is the device's highest stored sequence.
    Stored { acked: u64, new_records: usize, enrolled: bool },
    /// No record newer than `acked`: nothing written.
    Replay { acked: u64 },
    /// The device is not enrolled and enrolment on first use is off.
    Unenrolled,
    /// The device is enrolled with another key.
    KeyMismatch { enrolled: String },
}

/// One device as the fleet view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    /// Device id.
    pub device_id: String,
    /// Id of its enrolled key (hex SHA-256 of the public key).
    pub key_id: String,
    /// Unix seconds (server clock).
    pub enrolled_at: u64,
    /// `operator` or `first-use`.
    pub enrolled_by: String,
    /// Highest sequence number stored (current key epoch).
    pub acked: u64,
    /// When its last accepted batch arrived (server clock), if ever.
    pub last_seen: Option<u64>,
    /// When the device made that batch (device clock).
    pub status_created: Option<u64>,
    /// Channel followed.
    pub channel: Option<String>,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Applied release.
    pub release: Option<u64>,
    /// Its snapshot commit.
    pub commit: Option<String>,
    /// Active slot.
    pub slot: Option<String>,
    /// `healthy`, `trial`, `rolled-back`, `none`.
    pub health: Option<String>,
    /// Newest failure's reason code.
    pub last_failure: Option<String>,
    /// Message of the newest stored record that carries a reason.
    pub last_failure_message: Option<String>,
    /// Whether the newest stored record carries a reason (the last thing the device
    /// reported is a failure).
    pub newest_record_failed: bool,
    /// Paths drifted at the device's last check.
    pub drift_paths: u64,
    /// Applying paused on the device.
    pub paused: bool,
    /// Routine records the device compacted away before sending.
    pub dropped_total: u64,
    /// Batches accepted.
    pub batches: u64,
}

/// Per release of a channel: how the fleet took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseSummary {
    /// Channel.
    pub channel: String,
    /// Release number.
    pub release: u64,
    /// Devices whose last status names this release.
    pub current: u64,
    /// Devices that reported applying it (`applied`: healthy and committed), ever.
    pub applied: u64,
    /// Devices on it now and healthy.
    pub healthy: u64,
    /// Devices that reported rolling it back, ever.
    pub rolled_back: u64,
}

/// A stored report record, as a device's history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRecord {
    /// Key epoch.
    pub epoch: u64,
    /// Sequence number within the epoch.
    pub seq: u64,
    /// Unix seconds (device clock).
    pub at: u64,
    /// `applied`, `rolled-back`, `drift`, …
    pub kind: String,
    /// The release it concerns.
    pub release: Option<u64>,
    /// Reason code, for failures.
    pub reason: Option<String>,
    /// For a person.
    pub message: String,
    /// When its batch arrived (server clock).
    pub received_at: u64,
}

/// The columns [`device_row`] reads, from `devices d`.
const DEVICE_COLUMNS: &str = "device_id, key_id, enrolled_at, enrolled_by, acked, last_seen, status_created, channel,
    labels, release, commit_id, slot, health, last_failure, drift_paths, paused, dropped_total, batches,
    (SELECT message FROM reports r WHERE r.device_id = d.device_id AND r.reason IS NOT NULL
        ORDER BY epoch DESC, seq DESC LIMIT 1),
    COALESCE((SELECT reason IS NOT NULL FROM reports r WHERE r.device_id = d.device_id
        ORDER BY epoch DESC, seq DESC LIMIT 1), 0)";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    let labels: String = r.get(8)?;
    Ok(DeviceRow {
        device_id: r.get(0)?,
        key_id: r.get(1)?,
        enrolled_at: from_sql(r.get(2)?),
        enrolled_by: r.get(3)?,
        acked: from_sql(r.get(4)?),
        last_seen: r.get::<_, Option<i64>>(5)?.map(from_sql),
        status_created: r.get::<_, Option<i64>>(6)?.map(from_sql),
        channel: r.get(7)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        release: r.get::<_, Option<i64>>(9)?.map(from_sql),
        commit: r.get(10)?,
        slot: r.get(11)?,
        health: r.get(12)?,
        last_failure: r.get(13)?,
        drift_paths: from_sql(r.get(14)?),
        paused: r.get(15)?,
        dropped_total: from_sql(r.get(16)?),
        batches: from_sql(r.get(17)?),
        last_failure_message: r.get(18)?,
        newest_record_failed: r.get(19)?,
    })
}

/// A stored report record.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Key epoch.
    pub epoch: u64,
    /// The record.
    pub record: ReportRecord,
}

/// The open fleet database.
pub struct FleetDb {
    conn: Connection,
}

/// SQLite integers are signed; values past `i64::MAX` are clamped (sequence numbers are
/// refused before they get here).
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl FleetDb {
    /// Opens the database, creating and migrating it.
    pub fn open(path: &Path) -> Result<FleetDb, FleetDbError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut db = FleetDb { conn };
        db.migrate()?;
        Ok(db)
    }

    /// Opens an existing database (for commands that only read).
    pub fn open_existing(path: &Path) -> Result<FleetDb, FleetDbError> {
        if !path.exists() {
            return Err(FleetDbError::Missing(path.to_path_buf()));
        }
        FleetDb::open(path)
    }

    fn migrate(&mut self) -> Result<(), FleetDbError> {
        let version: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(FleetDbError::TooNew { found: version, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The key a device is enrolled with, if it is.
    pub fn enrolled_key(&self, device: &DeviceId) -> Result<Option<EnrolledKey>, FleetDbError> {
        let row: Option<(Vec<u8>, i64)> = self
            .conn
            .query_row("SELECT public_key, acked FROM devices WHERE device_id = ?1", [device.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(key, acked)| Ok(EnrolledKey { key: decode_key(device.as_str(), &key)?, acked: from_sql(acked) }))
            .transpose()
    }

    /// Enrolls `device` with `key`. An enrolled device keeps its key unless `replace`;
    /// replacing opens a new key epoch (sequence numbers start again).
    pub fn enroll(
        &mut self,
        device: &DeviceId,
        key: &PublicKey,
        by: EnrolledBy,
        replace: bool,
        now: u64,
    ) -> Result<Enrollment, FleetDbError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<String> = tx
            .query_row("SELECT key_id FROM devices WHERE device_id = ?1", [device.as_str()], |r| r.get(0))
            .optional()?;
        let new_id = key.id().to_hex();
        let outcome = match old {
            None => {
                insert_device(&tx, device, key, by, now)?;
                Enrollment::New
            }
            Some(old) if old == new_id => Enrollment::Unchanged,
            Some(old) if !replace => Enrollment::Conflict { enrolled: old },
            Some(old) => {
                tx.execute(
                    "UPDATE devices SET public_key = ?2, key_id = ?3, key_epoch = key_epoch + 1, acked = 0,
                        dropped_last = 0, enrolled_at = ?4, enrolled_by = ?5 WHERE device_id = ?1",
                    params![device.as_str(), key.to_bytes().as_slice(), new_id, sql_int(now), by.as_str()],
                )?;
                Enrollment::Replaced { old }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Stores a verified batch in one transaction: enrols the device first when
    /// `enroll_on_first_use` and it is unknown, refuses a key that is not the enrolled one,
    /// stores the records newer than the device's acknowledged sequence and updates its
    /// status. Writes nothing unless at least one record is new.
    pub fn store_batch(
        &mut self,
        batch: &VerifiedBatch,
        enroll_on_first_use: bool,
        now: u64,
    ) -> Result<BatchOutcome, FleetDbError> {
        let device = batch.device_id();
        let b = batch.batch();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(Vec<u8>, i64, i64, i64)> = tx
            .query_row(
                "SELECT public_key, key_epoch, acked, dropped_last FROM devices WHERE device_id = ?1",
                [device.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let (epoch, acked, dropped_last, enrolled) = match row {
            None if !enroll_on_first_use => return Ok(BatchOutcome::Unenrolled),
            None => {
                insert_device(&tx, device, &b.device_key, EnrolledBy::FirstUse, now)?;
                (1, 0, 0, true)
            }
            Some((key, epoch, acked, dropped_last)) => {
                let key = decode_key(device.as_str(), &key)?;
                if key != b.device_key {
                    return Ok(BatchOutcome::KeyMismatch { enrolled: key.id().to_hex() });
                }
                (epoch, from_sql(acked), from_sql(dropped_last), false)
            }
        };
        let new: Vec<&ReportRecord> = b.records.iter().filter(|r| r.seq > acked).collect();
        let Some(last) = new.last() else {
            // Dropping `tx` rolls back, first-use enrolment included: a replay changes nothing.
            return Ok(BatchOutcome::Replay { acked });
        };
        let new_acked = last.seq;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO reports(device_id, epoch, seq, at, kind, channel, release, reason, message,
                    received_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for r in &new {
                insert.execute(params![
                    device.as_str(),
                    epoch,
                    sql_int(r.seq),
                    sql_int(r.at),
                    r.kind,
                    b.status.channel,
                    r.release.map(sql_int),
                    r.reason,
                    r.message,
                    sql_int(now),
                ])?;
            }
        }
        // `dropped` counts what the device compacted since the last acknowledgement it
        // received. A batch that repeats stored records means our last ack never reached
        // it, so its count includes what the previous batch already reported.
        let repeats = b.records.first().is_some_and(|r| r.seq <= acked);
        let dropped_new = if repeats { b.dropped.saturating_sub(dropped_last) } else { b.dropped };
        let s = &b.status;
        let labels = serde_json::to_string(&s.labels).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "UPDATE devices SET acked = ?2, last_seen = ?3, status_created = ?4, channel = ?5, labels = ?6,
                release = ?7, commit_id = ?8, slot = ?9, health = ?10, last_failure = ?11, drift_paths = ?12,
                paused = ?13, dropped_total = dropped_total + ?14, dropped_last = ?15, batches = batches + 1
             WHERE device_id = ?1",
            params![
                device.as_str(),
                sql_int(new_acked),
                sql_int(now),
                sql_int(b.created),
                s.channel,
                labels,
                s.release.map(sql_int),
                s.commit,
                s.slot,
                s.health,
                s.last_failure,
                sql_int(s.drift_paths),
                s.paused,
                sql_int(dropped_new),
                sql_int(b.dropped),
            ],
        )?;
        tx.commit()?;
        Ok(BatchOutcome::Stored { acked: new_acked, new_records: new.len(), enrolled })
    }

    /// Every device, by id.
    pub fn devices(&self) -> Result<Vec<DeviceRow>, FleetDbError> {
        let mut stmt = self.conn.prepare(&format!("SELECT {DEVICE_COLUMNS} FROM devices d ORDER BY device_id"))?;
        let rows = stmt.query_map([], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One device, if enrolled.
    pub fn device(&self, device: &DeviceId) -> Result<Option<DeviceRow>, FleetDbError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE device_id = ?1");
        Ok(self.conn.query_row(&sql, [device.as_str()], device_row).optional()?)
    }

    /// A device's newest `limit` stored records, newest first, and how many it has in all.
    pub fn history(&self, device: &DeviceId, limit: usize) -> Result<(Vec<HistoryRecord>, u64), FleetDbError> {
        let total: i64 =
            self.conn
                .query_row("SELECT COUNT(*) FROM reports WHERE device_id = ?1", [device.as_str()], |r| r.get(0))?;
        let mut stmt = self.conn.prepare(
            "SELECT epoch, seq, at, kind, release, reason, message, received_at FROM reports WHERE device_id = ?1
             ORDER BY epoch DESC, seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![device.as_str(), sql_int(limit as u64)], |r| {
            Ok(HistoryRecord {
                epoch: from_sql(r.get(0)?),
                seq: from_sql(r.get(1)?),
                at: from_sql(r.get(2)?),
                kind: r.get(3)?,
                release: r.get::<_, Option<i64>>(4)?.map(from_sql),
                reason: r.get(5)?,
                message: r.get(6)?,
                received_at: from_sql(r.get(7)?),
            })
        })?;
        Ok((rows.collect::<Result<_, _>>()?, from_sql(total)))
    }

    /// Per (channel, release) that any device runs or reported applying or rolling back:
    /// how many run it now, applied it, are healthy on it, rolled it back. Newest first.
    pub fn release_summary(&self) -> Result<Vec<ReleaseSummary>, FleetDbError> {
        let mut stmt = self.conn.prepare(
            "WITH rels AS (
                SELECT channel, release FROM reports
                    WHERE channel IS NOT NULL AND release IS NOT NULL AND kind IN ('applied', 'rolled-back')
                UNION SELECT channel, release FROM devices WHERE channel IS NOT NULL AND release IS NOT NULL)
             SELECT x.channel, x.release,
                (SELECT COUNT(*) FROM devices d WHERE d.channel = x.channel AND d.release = x.release),
                (SELECT COUNT(DISTINCT device_id) FROM reports r
                    WHERE r.channel = x.channel AND r.release = x.release AND r.kind = 'applied'),
                (SELECT COUNT(*) FROM devices d
                    WHERE d.channel = x.channel AND d.release = x.release AND d.health = 'healthy'),
                (SELECT COUNT(DISTINCT device_id) FROM reports r
                    WHERE r.channel = x.channel AND r.release = x.release AND r.kind = 'rolled-back')
             FROM rels x ORDER BY x.channel, x.release DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ReleaseSummary {
                channel: r.get(0)?,
                release: from_sql(r.get(1)?),
                current: from_sql(r.get(2)?),
                applied: from_sql(r.get(3)?),
                healthy: from_sql(r.get(4)?),
                rolled_back: from_sql(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A device's stored records, oldest first.
    #[cfg(test)]
    pub fn records(&self, device: &str) -> Result<Vec<StoredRecord>, FleetDbError> {
        let mut stmt = self.conn.prepare(
            "SELECT epoch, seq, at, kind, release, reason, message FROM reports WHERE device_id = ?1
             ORDER BY epoch, seq",
        )?;
        let rows = stmt.query_map([device], |r| {
            Ok(StoredRecord {
                epoch: from_sql(r.get(0)?),
                record: ReportRecord {
                    seq: from_sql(r.get(1)?),
                    at: from_sql(r.get(2)?),
                    kind: r.get(3)?,
                    release: r.get::<_, Option<i64>>(4)?.map(from_sql),
                    reason: r.get(5)?,
                    message: r.get(6)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn insert_device(
    tx: &rusqlite::Transaction<'_>,
    device: &DeviceId,
    key: &PublicKey,
    by: EnrolledBy,
    now: u64,
) -> Result<(), FleetDbError> {
    tx.execute(
        "INSERT INTO devices(device_id, public_key, key_id, enrolled_at, enrolled_by) VALUES(?1, ?2, ?3, ?4, ?5)",
        params![device.as_str(), key.to_bytes().as_slice(), key.id().to_hex(), sql_int(now), by.as_str()],
    )?;
    Ok(())
}

fn decode_key(device: &str, bytes: &[u8]) -> Result<PublicKey, FleetDbError> {
    let damaged = |what: String| FleetDbError::Damaged { device: device.to_owned(), what };
    let raw: [u8; 32] = bytes.try_into().map_err(|_| damaged(format!("public key of {} bytes", bytes.len())))?;
    PublicKey::from_bytes(&raw).map_err(|e| damaged(e.to_string()))
}

/// Short form of a key id for tables.
pub fn short_key_id(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}
