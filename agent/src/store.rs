//! The agent's SQLite store (`<state_dir>/ferry.db`, WAL, `synchronous=FULL`): trust roots,
//! manifests, payloads (their progress here, their bytes in files beside the database:
//! [`payloads`]), the apply journal, refused releases, the event outbox and a few settings.
//! Schema changes are numbered migrations keyed on `PRAGMA user_version`.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

use ferry_proto::{Reason, Sha256Digest};

mod payloads;

pub use payloads::{PayloadReader, CHUNK};

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE trust_roots(version INTEGER PRIMARY KEY, envelope BLOB NOT NULL, stored_at INTEGER NOT NULL);
CREATE TABLE manifests(digest TEXT PRIMARY KEY, channel TEXT NOT NULL, release INTEGER NOT NULL,
    envelope BLOB NOT NULL, stored_at INTEGER NOT NULL);
CREATE TABLE payloads(digest TEXT PRIMARY KEY, manifest TEXT NOT NULL, size INTEGER NOT NULL,
    stored INTEGER NOT NULL DEFAULT 0, verified INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);
CREATE TABLE payload_chunks(digest TEXT NOT NULL, offset INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY(digest, offset)) WITHOUT ROWID;
CREATE TABLE journal(id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, release INTEGER NOT NULL,
    commit_id TEXT NOT NULL, manifest TEXT NOT NULL, from_slot TEXT, to_slot TEXT NOT NULL, state TEXT NOT NULL,
    boots INTEGER NOT NULL DEFAULT 0, reason TEXT, message TEXT, started_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE refused(channel TEXT NOT NULL, release INTEGER NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL,
    at INTEGER NOT NULL, PRIMARY KEY(channel, release));
CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL,
    release INTEGER, reason TEXT, message TEXT NOT NULL);
CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"#,
    r#"
ALTER TABLE payloads ADD COLUMN validator TEXT;
CREATE TABLE mirror_state(mirror TEXT NOT NULL, path TEXT NOT NULL, etag TEXT, body BLOB,
    PRIMARY KEY(mirror, path));
"#,
    // Chunks move to a rowid table. In a WITHOUT ROWID table every 1 MiB row is part of the
    // b-tree key, so each lookup read whole overflowing rows just to compare keys: 7.5 times
    // the bytes for a 130-chunk payload. A rowid table keeps (digest, offset) in a small index.
    r#"
CREATE TABLE payload_chunks_rowid(digest TEXT NOT NULL, offset INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY(digest, offset));
INSERT INTO payload_chunks_rowid(digest, offset, data) SELECT digest, offset, data FROM payload_chunks;
DROP TABLE payload_chunks;
ALTER TABLE payload_chunks_rowid RENAME TO payload_chunks;
"#,
    // Payload bytes move to files (`payloads.rs`): the code step before this migration
    // copies every stored chunk out (`payloads::move_chunks_to_files`).
    r#"
DROP TABLE payload_chunks;
"#,
];

/// The migration whose code step moves payload chunks out of the database into files.
const MIGRATION_CHUNKS_TO_FILES: usize = 3;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The database is from a newer agent.
    #[error("state database schema {found} is newer than this agent understands ({known})")]
    TooNew { found: i64, known: i64 },
    /// The source of a payload being copied in (a file on a USB stick) could not be read.
    #[error("reading the payload: {0}")]
    Source(std::io::Error),
    /// A payload file could not be read or written.
    #[error("payload file {}: {source}", path.display())]
    PayloadFile {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// SQLite's "database is busy / locked" answers.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

impl StoreError {
    /// Storage failures are local I/O.
    pub fn reason(&self) -> Reason {
        Reason::Io
    }
}

/// Where an apply stands. Stored as text in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalState {
    /// The inactive slot is being written.
    Started,
    /// About to switch (or switched) `current` to the new slot.
    Switching,
    /// Switched; hooks are running.
    Trial,
    /// Healthy and kept.
    Committed,
    /// Switching back after a failed trial.
    RollingBack,
    /// Switched back; the release is refused.
    RolledBack,
    /// Interrupted before the switch; nothing changed.
    Aborted,
}

impl JournalState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalState::Started => "started",
            JournalState::Switching => "switching",
            JournalState::Trial => "trial",
            JournalState::Committed => "committed",
            JournalState::RollingBack => "rolling-back",
            JournalState::RolledBack => "rolled-back",
            JournalState::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> JournalState {
        match s {
            "started" => JournalState::Started,
            "switching" => JournalState::Switching,
            "trial" => JournalState::Trial,
            "committed" => JournalState::Committed,
            "rolling-back" => JournalState::RollingBack,
            "rolled-back" => JournalState::RolledBack,
            _ => JournalState::Aborted,
        }
    }

    /// True while an apply is unfinished.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            JournalState::Started | JournalState::Switching | JournalState::Trial | JournalState::RollingBack
        )
    }
}

/// One apply attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JournalEntry {
    /// Row id.
    pub id: i64,
    /// Channel.
    pub channel: String,
    /// Release number.
    pub release: u64,
    /// Snapshot commit.
    pub commit: String,
    /// Manifest digest (hex).
    pub manifest: String,
    /// Slot active before.
    pub from_slot: Option<String>,
    /// Slot written.
    pub to_slot: String,
    /// Where it stands.
    #[serde(serialize_with = "ser_state")]
    pub state: JournalState,
    /// Boots seen during the trial.
    pub boots: u32,
    /// Failure reason code.
    pub reason: Option<String>,
    /// Failure message.
    pub message: Option<String>,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
}

fn ser_state<S: serde::Serializer>(s: &JournalState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Per-device sequence number.
    pub seq: i64,
    /// Unix seconds.
    pub at: u64,
    /// What happened (`applied`, `rejected`, …).
    pub kind: String,
    /// Release it concerns.
    pub release: Option<u64>,
    /// Reason code for failures.
    pub reason: Option<String>,
    /// For a person.
    pub message: String,
}

/// A document's ETag and body as last fetched from a mirror.
pub type CachedDocument = (Option<String>, Vec<u8>);

/// The open database.
pub struct Store {
    conn: Connection,
    /// `<state_dir>/payloads`: one file of payload bytes per payload row.
    payload_dir: PathBuf,
}

/// Now in Unix seconds. Builds with the test-only `failpoints` feature honour
/// `FERRY_FAKE_NOW` (Unix seconds), so tests can set the clock back or to 1970.
pub fn now() -> u64 {
    #[cfg(feature = "failpoints")]
    if let Some(fake) = std::env::var("FERRY_FAKE_NOW").ok().and_then(|v| v.parse().ok()) {
        return fake;
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// SQL condition for the events that are failures: a typed reason, except a release not
/// targeted at this device, which is news, not a failure.
pub const FAILURE_EVENTS: &str = "reason IS NOT NULL AND kind <> 'not-targeted'";

impl Store {
    /// Opens (creating and migrating) `<state_dir>/ferry.db`.
    ///
    /// Two processes opening a *new* database at once (the service creating it, a `status`
    /// from a shell) can see SQLite answer "database is locked" at once, without waiting
    /// for the busy timeout, while the other one switches it to WAL or migrates it; that
    /// window is retried for up to 5 s.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let mut attempt = 0;
        loop {
            match Store::open_once(state_dir) {
                Err(StoreError::Sql(e)) if is_busy(&e) && attempt < 50 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn open_once(state_dir: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(state_dir.join("ferry.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { conn, payload_dir: state_dir.join(payloads::DIR) };
        store.migrate()?;
        Ok(store)
    }

    /// Applies missing migrations. The version is read and bumped inside one
    /// `BEGIN IMMEDIATE` transaction, so two processes opening a fresh database at once
    /// (the daemon and a `status` from a shell) never both apply the same migration.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew { found: version, known });
        }
        let mut moved = 0;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            if index == MIGRATION_CHUNKS_TO_FILES {
                moved = payloads::move_chunks_to_files(&tx, &self.payload_dir)?;
            }
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        if moved > 0 {
            // The dropped chunks' pages would stay in the file as free pages.
            if let Err(e) = self.conn.execute_batch("VACUUM") {
                tracing::warn!("state database: compacting after moving {moved} payload bytes out: {e}");
            }
        }
        Ok(())
    }

    /// The connection, for the modules that own a table's SQL (the report outbox).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// `PRAGMA integrity_check` result ("ok" when sound).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    // --- settings -------------------------------------------------------------------

    /// A setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Sets a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO settings(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Removes a setting (absent already is fine).
    pub fn clear_setting(&self, key: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM settings WHERE key = ?1", [key])?;
        Ok(())
    }

    // --- trust ----------------------------------------------------------------------

    /// The newest stored trust root envelope.
    pub fn latest_root(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT version, envelope FROM trust_roots ORDER BY version DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()?)
    }

    /// Stored trust roots newer than `version`, oldest first.
    pub fn roots_after(&self, version: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT version, envelope FROM trust_roots WHERE version > ?1 ORDER BY version")?;
        let rows = stmt.query_map([version as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a verified trust root.
    pub fn put_root(&self, version: u64, envelope: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO trust_roots(version, envelope, stored_at) VALUES(?1, ?2, ?3)",
            params![version as i64, envelope, now() as i64],
        )?;
        Ok(())
    }

    // --- manifests and payloads -----------------------------------------------------

    /// Stores a verified manifest envelope.
    pub fn put_manifest(
        &self,
        digest: &Sha256Digest,
        channel: &str,
        release: u64,
        envelope: &[u8],
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO manifests(digest, channel, release, envelope, stored_at) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![digest.to_hex(), channel, release as i64, envelope, now() as i64],
        )?;
        Ok(())
    }

    /// A stored manifest envelope.
    pub fn manifest(&self, digest: &Sha256Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT envelope FROM manifests WHERE digest = ?1", [digest.to_hex()], |r| r.get(0))
            .optional()?)
    }

    // --- mirror state ---------------------------------------------------------------

    /// The ETag and body last seen for `path` on `mirror`.
    pub fn mirror_state(&self, mirror: &str, path: &str) -> Result<Option<CachedDocument>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT etag, body FROM mirror_state WHERE mirror = ?1 AND path = ?2", [mirror, path], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Remembers the ETag and body of a verified document.
    pub fn set_mirror_state(
        &self,
        mirror: &str,
        path: &str,
        etag: Option<&str>,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO mirror_state(mirror, path, etag, body) VALUES(?1, ?2, ?3, ?4)",
            params![mirror, path, etag, body],
        )?;
        Ok(())
    }

    // --- journal --------------------------------------------------------------------

    /// Opens a journal entry in state `started`.
    pub fn journal_start(&self, e: &JournalEntry) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO journal(channel, release, commit_id, manifest, from_slot, to_slot, state, boots, started_at, updated_at)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'started', 0, ?7, ?7)",
            params![e.channel, e.release as i64, e.commit, e.manifest, e.from_slot, e.to_slot, now() as i64],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Moves a journal entry to `state` (durably: `synchronous=FULL`).
    pub fn journal_set(&self, id: i64, state: JournalState, failure: Option<(Reason, &str)>) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE journal SET state = ?2, reason = COALESCE(?3, reason), message = COALESCE(?4, message), updated_at = ?5 WHERE id = ?1",
            params![id, state.as_str(), failure.map(|f| f.0.code()), failure.map(|f| f.1), now() as i64],
        )?;
        Ok(())
    }

    /// Counts one more boot into a trial.
    pub fn journal_add_boot(&self, id: i64) -> Result<u32, StoreError> {
        self.conn.execute("UPDATE journal SET boots = boots + 1 WHERE id = ?1", [id])?;
        Ok(self.conn.query_row("SELECT boots FROM journal WHERE id = ?1", [id], |r| r.get(0))?)
    }

    /// The most recent entries, newest first.
    pub fn journal(&self, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, channel, release, commit_id, manifest, from_slot, to_slot, state, boots, reason, message, started_at, updated_at
             FROM journal ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(JournalEntry {
                id: r.get(0)?,
                channel: r.get(1)?,
                release: r.get::<_, i64>(2)? as u64,
                commit: r.get(3)?,
                manifest: r.get(4)?,
                from_slot: r.get(5)?,
                to_slot: r.get(6)?,
                state: JournalState::parse(&r.get::<_, String>(7)?),
                boots: r.get(8)?,
                reason: r.get(9)?,
                message: r.get(10)?,
                started_at: r.get::<_, i64>(11)? as u64,
                updated_at: r.get::<_, i64>(12)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest journal entry.
    pub fn last_journal(&self) -> Result<Option<JournalEntry>, StoreError> {
        Ok(self.journal(1)?.into_iter().next())
    }

    // --- refused releases -----------------------------------------------------------

    /// Records that a release must not be tried again.
    pub fn refuse(&self, channel: &str, release: u64, reason: Reason, message: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO refused(channel, release, reason, message, at) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![channel, release as i64, reason.code(), message, now() as i64],
        )?;
        Ok(())
    }

    /// Why a release was refused, if it was.
    pub fn refusal(&self, channel: &str, release: u64) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT reason, message FROM refused WHERE channel = ?1 AND release = ?2",
                params![channel, release as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    // --- events ---------------------------------------------------------------------

    /// Records an event in the outbox.
    pub fn record_event(
        &self,
        kind: &str,
        release: Option<u64>,
        reason: Option<Reason>,
        message: &str,
    ) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO events(at, kind, release, reason, message) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![now() as i64, kind, release.map(|r| r as i64), reason.map(|r| r.code()), message],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records an event unless `state` is what was recorded last under the settings key
    /// `key`: news such as "not targeted" or "waiting for the window" is reported once, not
    /// on every poll. Returns whether it recorded.
    pub fn record_event_once(
        &self,
        key: &str,
        state: &str,
        kind: &str,
        release: Option<u64>,
        reason: Option<Reason>,
        message: &str,
    ) -> Result<bool, StoreError> {
        if self.setting(key)?.as_deref() == Some(state) {
            return Ok(false);
        }
        self.set_setting(key, state)?;
        self.record_event(kind, release, reason, message)?;
        Ok(true)
    }

    /// The newest event that carries a failure reason. Once the operator's side has
    /// acknowledged (and so removed) it, the copy the outbox kept (see
    /// [`crate::outbox::LAST_FAILURE_KEY`]); every event still held is newer than that one.
    pub fn last_failure(&self) -> Result<Option<Event>, StoreError> {
        if let Some(e) = self.events(&format!("WHERE {FAILURE_EVENTS}"), 1)?.into_iter().next() {
            return Ok(Some(e));
        }
        Ok(self.setting(crate::outbox::LAST_FAILURE_KEY)?.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// The most recent events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.events("", limit)
    }

    fn events(&self, filter: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT seq, at, kind, release, reason, message FROM events {filter} ORDER BY seq DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Event {
                seq: r.get(0)?,
                at: r.get::<_, i64>(1)? as u64,
                kind: r.get(2)?,
                release: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                reason: r.get(4)?,
                message: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        drop(s);
        let s = Store::open(dir.path()).expect("reopen migrates nothing twice");
        assert_eq!(s.integrity_check().expect("check"), "ok");
        let e = JournalEntry {
            id: 0,
            channel: "c".into(),
            release: 1,
            commit: "x".into(),
            manifest: "m".into(),
            from_slot: None,
            to_slot: "a".into(),
            state: JournalState::Started,
            boots: 0,
            reason: None,
            message: None,
            started_at: 0,
            updated_at: 0,
        };
        let id = s.journal_start(&e).expect("start");
        s.journal_set(id, JournalState::RolledBack, Some((Reason::HealthFailed, "exit 1"))).expect("set");
        let last = s.last_journal().expect("q").expect("entry");
        assert_eq!(last.state, JournalState::RolledBack);
        assert_eq!(last.reason.as_deref(), Some("health-failed"));
    }
}
