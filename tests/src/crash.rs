//! Crash-injection helpers: the agent's crash points and slot failpoints read from its own
//! source (so a point added there without a test here fails the crash test rather than going
//! unexercised), the invariants a `kill -9` at any instant must leave intact
//! ([`check_invariants`]), pristine state directories copied per crash run, and a small
//! seeded PRNG for the random instants; and for reports, a [`ReportLedger`] that checks the
//! device's outbox against the fleet database (nothing lost, nothing stored twice).
//!
//! The invariants are checked from outside the agent, reading the state directory the way
//! an operator with a shell would: the `current` link, the slot's `.ferry-slot` record
//! (parsed by hand, so a record the agent could not read is caught too), the tree compared
//! with `git archive` of the snapshot ref the record names, and `ferry.db` opened read-only.
//! They return a [`Violation`] rather than panicking, so a test can count torn states over
//! many runs and report them all.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

use rusqlite::{Connection, OpenFlags};

use crate::fixture::{Device, Operator};
use crate::trees::{self, Entry};
use crate::{git, workspace_root};

/// The names in `CRASH_POINTS` of `agent/src/crash.rs`, in order.
pub fn crash_points() -> Vec<String> {
    let text = agent_source("crash.rs");
    let start = text.find("pub const CRASH_POINTS").expect("agent/src/crash.rs defines CRASH_POINTS");
    let list = &text[start..];
    let end = list.find("];").expect("CRASH_POINTS ends with `];`");
    // Between quotes: every odd piece of the split.
    list[..end].split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Every `crate::crash_point!("…")` in the agent's source (all of `agent/src`), sorted, each
/// once: the points the agent can actually stop at, which `CRASH_POINTS` must list.
pub fn crash_points_in_source() -> Vec<String> {
    const MARK: &str = "crash_point!(\"";
    let mut found = std::collections::BTreeSet::new();
    let mut dirs = vec![workspace_root().join("agent").join("src")];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") && !path.ends_with("crash.rs") {
                let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                for (at, _) in text.match_indices(MARK) {
                    let rest = &text[at + MARK.len()..];
                    if let Some(end) = rest.find('"') {
                        found.insert(rest[..end].to_owned());
                    }
                }
            }
        }
    }
    found.into_iter().collect()
}

/// The names of the `fail_point!`s in `agent/src/slots.rs`, in source order.
pub fn slot_failpoints() -> Vec<String> {
    const MARK: &str = "fail_point!(\"";
    let text = agent_source("slots.rs");
    text.match_indices(MARK)
        .filter_map(|(at, _)| {
            let rest = &text[at + MARK.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect()
}

fn agent_source(file: &str) -> String {
    let path = workspace_root().join("agent").join("src").join(file);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// SplitMix64: a tiny deterministic PRNG, enough to spread kill instants reproducibly.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Copies directory `from` to `to` (which must not exist yet) with `cp -a`: links stay
/// links, modes and times are kept.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("running cp");
    assert!(status.success(), "cp -a {} {}: {status}", from.display(), to.display());
}

/// Copies a state directory into `dev`'s, which must not exist yet. The copy's files get
/// new status-change times (ctimes) in copy order, so each slot's `.ferry-slot` record is
/// then written again, same bytes, once the clock has moved on, and its new ctime noted in
/// the copied `ferry.db` as the agent notes it: as on the original device, the record is
/// later than everything in its slot and is the one the agent wrote, which keeps the slot
/// eligible for an in-place update (`agent/src/git/update.rs`), the path most applies of a
/// device take.
pub fn copy_state(from: &Path, dev: &Device) {
    use std::os::unix::fs::MetadataExt;
    copy_dir(from, &dev.state);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let db = Connection::open(dev.state.join("ferry.db")).expect("opening the copied ferry.db");
    for slot in ["a", "b"] {
        let record = dev.state.join("slots").join(slot).join(".ferry-slot");
        if let Ok(bytes) = std::fs::read(&record) {
            std::fs::write(&record, bytes).unwrap_or_else(|e| panic!("rewriting {}: {e}", record.display()));
            // The agent notes the ctime of each record it writes (`agent.rs`
            // `record_stamp_key`) and only reuses a slot whose record still has it.
            let meta = std::fs::metadata(&record).expect("stat the record");
            let stamp = format!("{}.{:09}", meta.ctime(), meta.ctime_nsec());
            db.execute(
                "INSERT INTO settings(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [format!("slot.{slot}.record_ctime"), stamp],
            )
            .expect("noting the record's ctime in the copied ferry.db");
        }
    }
}

/// One released snapshot as the operator's repo holds it.
#[derive(Debug, Clone)]
pub struct Released {
    /// Snapshot commit (`refs/ferry/<channel>/<n>`).
    pub commit: String,
    /// Its tree.
    pub tree: String,
    /// `git archive` of it, as [`trees::snapshot`] reads a directory.
    pub files: BTreeMap<String, Entry>,
}

/// The released trees of one channel, extracted once from the operator's snapshot refs.
#[derive(Debug)]
pub struct ReleaseTrees {
    /// The channel.
    pub channel: String,
    releases: BTreeMap<u64, Released>,
}

impl ReleaseTrees {
    /// Reads every `refs/ferry/<channel>/<n>` of `op`'s repo and extracts each tree under
    /// `op`'s temporary directory.
    pub fn load(op: &Operator, channel: &str) -> ReleaseTrees {
        let prefix = format!("refs/ferry/{channel}/");
        let refs = git(&op.repo, &["for-each-ref", "--format=%(refname)", &prefix]);
        let mut releases = BTreeMap::new();
        for name in refs.lines() {
            let n: u64 = name[prefix.len()..].parse().unwrap_or_else(|e| panic!("release ref {name}: {e}"));
            let commit = git(&op.repo, &["rev-parse", &format!("{name}^{{commit}}")]);
            let tree = git(&op.repo, &["rev-parse", &format!("{name}^{{tree}}")]);
            let dest = op.dir.path().join(format!("archive-{channel}-{n}"));
            if !dest.exists() {
                trees::git_archive(&op.repo, name, None, &dest);
            }
            releases.insert(n, Released { commit, tree, files: trees::snapshot(&dest) });
        }
        assert!(!releases.is_empty(), "no {prefix}* refs in {}", op.repo.display());
        ReleaseTrees { channel: channel.to_owned(), releases }
    }

    /// Release `n`, if the operator made it.
    pub fn get(&self, n: u64) -> Option<&Released> {
        self.releases.get(&n)
    }
}

/// What a slot's `.ferry-slot` record says (the fields the invariants need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    /// Release number.
    pub release: u64,
    /// Snapshot commit.
    pub commit: String,
    /// Snapshot tree.
    pub tree: String,
    /// Channel.
    pub channel: String,
}

/// Reads `<slot>/.ferry-slot`: `Ok(None)` when absent, an error when it does not parse.
pub fn read_record(slot: &Path) -> Result<Option<SlotRecord>, String> {
    let path = slot.join(".ferry-slot");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(" = ") {
            fields.insert(key.trim(), value.trim().trim_matches('"').to_owned());
        }
    }
    let field =
        |key: &str| fields.get(key).cloned().ok_or_else(|| format!("{} has no `{key}`:\n{text}", path.display()));
    if field("format")? != "1" {
        return Err(format!("{} is not format 1:\n{text}", path.display()));
    }
    Ok(Some(SlotRecord {
        release: field("release")?.parse().map_err(|e| format!("{}: release: {e}", path.display()))?,
        commit: field("commit")?,
        tree: field("tree")?,
        channel: field("channel")?,
    }))
}

/// One row of the agent's apply journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// Row id.
    pub id: i64,
    /// Release.
    pub release: u64,
    /// Snapshot commit.
    pub commit: String,
    /// Slot active when the apply started.
    pub from_slot: Option<String>,
    /// Slot written.
    pub to_slot: String,
    /// `started`, `switching`, `trial`, `committed`, `rolling-back`, `rolled-back`, `aborted`.
    pub state: String,
}

impl JournalRow {
    /// True for the states of an unfinished apply, which only a start may reconcile.
    pub fn is_open(&self) -> bool {
        matches!(self.state.as_str(), "started" | "switching" | "trial" | "rolling-back")
    }
}

impl fmt::Display for JournalRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self.from_slot.as_deref().unwrap_or("-");
        write!(f, "#{} release {} {} ({from} -> {})", self.id, self.release, self.state, self.to_slot)
    }
}

/// When the invariants are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Right after the agent died: an apply may be open and temporaries may lie around,
    /// as long as the next start can reconcile them.
    AfterCrash,
    /// After a run that finished on its own: nothing open, nothing temporary.
    Settled,
}

/// What the state directory holds, once the invariants hold.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The slot `current` names (`a` or `b`) and its record.
    pub current: Option<(String, SlotRecord)>,
    /// The journal, newest first.
    pub journal: Vec<JournalRow>,
    /// Releases of the channel refused from now on.
    pub refused: Vec<u64>,
}

impl Observed {
    /// The release `current` holds.
    pub fn current_release(&self) -> Option<u64> {
        self.current.as_ref().map(|(_, r)| r.release)
    }

    /// The newest journal row.
    pub fn newest(&self) -> Option<&JournalRow> {
        self.journal.first()
    }
}

/// A broken invariant: what was found, for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! violated {
    ($($arg:tt)*) => { return Err(Violation(format!($($arg)*))) };
}

/// The crash-safety invariants of DESIGN "The agent", checked on `dev`'s state directory:
///
/// 1. `ferry.db` opened read-only passes `PRAGMA integrity_check`;
/// 2. `current` is a symlink to `slots/a` or `slots/b`, or absent only while no release was
///    ever committed;
/// 3. the slot it names has a `.ferry-slot` record, for a release the operator made, and its
///    tree equals `git archive` of that release's snapshot (commit and tree ids agree too);
/// 4. the journal agrees with `current`: no open row but possibly the newest (a start only
///    reconciles that one); an open newest row names `current` as its `from` or `to` slot
///    (and when `to`, the slot holds that release); a closed newest row is `committed` into
///    `current`, or `rolled-back`/`aborted` back to `current`; and, unless `current` is an
///    open row's new slot, the newest committed row is into `current` and names the release
///    and commit it holds;
/// 5. [`Phase::Settled`] only: no open row at all, and no temporaries left —
///    `current.tmp-*`, anything in `slots/` but `a` and `b`, `.ferry-slot.*.tmp` record
///    temporaries, and interrupted pack imports (`objects/pack/.tmp*`, `*.keep`).
pub fn check_invariants(dev: &Device, trees: &ReleaseTrees, phase: Phase) -> Result<Observed, Violation> {
    // 1. SQLite, before anything else opens it.
    let (journal, refused) = read_db(&dev.state.join("ferry.db"), &trees.channel)?;

    // 2. `current`.
    let link = dev.current();
    let slot = match fs::symlink_metadata(&link) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => violated!("inspecting {}: {e}", link.display()),
        Ok(m) if !m.file_type().is_symlink() => violated!("{} is not a symlink", link.display()),
        Ok(_) => {
            let target = fs::read_link(&link).map_err(|e| Violation(format!("reading {}: {e}", link.display())))?;
            match target.to_str() {
                Some("slots/a") => Some("a".to_owned()),
                Some("slots/b") => Some("b".to_owned()),
                _ => violated!("current points at {}, not slots/a or slots/b", target.display()),
            }
        }
    };

    // 3. The slot holds one complete, verified tree.
    let current = match slot {
        None => {
            if let Some(row) = journal.iter().find(|r| r.state == "committed") {
                violated!("current is missing although {row} was committed");
            }
            None
        }
        Some(slot) => {
            let dir = dev.state.join("slots").join(&slot);
            let record = read_record(&dir)
                .map_err(Violation)?
                .ok_or_else(|| Violation(format!("current -> slots/{slot}, which has no .ferry-slot record")))?;
            let Some(released) = trees.get(record.release) else {
                violated!("slots/{slot} records release {}, which the operator never made", record.release);
            };
            if record.commit != released.commit || record.tree != released.tree || record.channel != trees.channel {
                violated!(
                    "slots/{slot} records {record:?}, the operator's release {} is commit {} tree {} on {}",
                    record.release,
                    released.commit,
                    released.tree,
                    trees.channel
                );
            }
            if let Some(diff) = first_difference(&released.files, &trees::snapshot(&dir)) {
                violated!("current -> slots/{slot} (release {}) is not that release's tree: {diff}", record.release);
            }
            Some((slot, record))
        }
    };

    // 4. The journal agrees with `current`.
    let cur = current.as_ref().map(|(s, _)| s.as_str());
    let cur_release = current.as_ref().map(|(_, r)| r.release);
    if let Some(row) = journal.iter().skip(1).find(|r| r.is_open()) {
        violated!("{row} is open but not the newest entry: no start will ever reconcile it");
    }
    let mut check_committed = true;
    if let Some(row) = journal.first() {
        if row.is_open() {
            if phase == Phase::Settled {
                violated!("the journal's newest entry {row} is still open after a run that finished");
            }
            if cur == Some(row.to_slot.as_str()) && row.from_slot.as_deref() != cur {
                if cur_release != Some(row.release) {
                    violated!(
                        "{row} is open and current -> slots/{}, which holds release {cur_release:?}",
                        row.to_slot
                    );
                }
                check_committed = false;
            } else if cur != row.from_slot.as_deref() {
                violated!("{row} is open but current -> {cur:?}, neither its from nor its to slot");
            }
        } else {
            match row.state.as_str() {
                "committed" => {
                    if cur != Some(row.to_slot.as_str()) || cur_release != Some(row.release) {
                        violated!("{row} but current -> {cur:?} holds release {cur_release:?}");
                    }
                }
                "rolled-back" | "aborted" => {
                    if cur != row.from_slot.as_deref() {
                        violated!("{row} but current -> {cur:?}, not the slot it started from");
                    }
                }
                other => violated!("{row}: unknown journal state {other:?}"),
            }
        }
    }
    if check_committed {
        if let Some(row) = journal.iter().find(|r| r.state == "committed") {
            let holds = current.as_ref().map(|(_, r)| (r.release, r.commit.as_str()));
            if cur != Some(row.to_slot.as_str()) || holds != Some((row.release, row.commit.as_str())) {
                violated!("the newest committed apply is {row}, but current -> {cur:?} holds {holds:?}");
            }
        }
    }

    // 5. Nothing left half done.
    if phase == Phase::Settled {
        let strays = stray_temporaries(&dev.state);
        if !strays.is_empty() {
            violated!("temporaries left after a run that finished: {}", strays.join(", "));
        }
    }
    Ok(Observed { current, journal, refused })
}

/// Opens `db` read-only: integrity check, journal (newest first) and refused releases.
fn read_db(db: &Path, channel: &str) -> Result<(Vec<JournalRow>, Vec<u64>), Violation> {
    let sql = |e: rusqlite::Error| Violation(format!("{}: {e}", db.display()));
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sql)?;
    let check: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql)?;
    if check != ["ok"] {
        violated!("{}: integrity_check says {check:?}", db.display());
    }
    let journal = conn
        .prepare("SELECT id, release, commit_id, from_slot, to_slot, state FROM journal ORDER BY id DESC")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(JournalRow {
                    id: r.get(0)?,
                    release: r.get::<_, i64>(1)? as u64,
                    commit: r.get(2)?,
                    from_slot: r.get(3)?,
                    to_slot: r.get(4)?,
                    state: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql)?;
    let refused = conn
        .prepare("SELECT release FROM refused WHERE channel = ?1 ORDER BY release")
        .and_then(|mut s| s.query_map([channel], |r| r.get::<_, i64>(0).map(|n| n as u64))?.collect())
        .map_err(sql)?;
    Ok((journal, refused))
}

/// What an interrupted operation leaves in a state directory (paths relative to it).
pub fn stray_temporaries(state: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let mut strays: Vec<String> = names(state).into_iter().filter(|n| n.starts_with("current.tmp-")).collect();
    for name in names(&state.join("slots")) {
        if name != "a" && name != "b" {
            strays.push(format!("slots/{name}"));
            continue;
        }
        for inner in names(&state.join("slots").join(&name)) {
            if inner.starts_with(".ferry-slot.") && inner.ends_with(".tmp") {
                strays.push(format!("slots/{name}/{inner}"));
            }
        }
    }
    for name in names(&state.join("objects").join("pack")) {
        if name.starts_with(".tmp") || name.ends_with(".keep") {
            strays.push(format!("objects/pack/{name}"));
        }
    }
    strays.sort();
    strays
}

/// The first path where `actual` differs from `expected`, described for a person.
pub fn first_difference(expected: &BTreeMap<String, Entry>, actual: &BTreeMap<String, Entry>) -> Option<String> {
    let describe = |e: &Entry| match e {
        Entry::Dir => "a directory".to_owned(),
        Entry::File(x, c) => format!("a file (exec {x}, {} bytes)", c.len()),
        Entry::Link(t) => format!("a link to {t}"),
    };
    for (path, want) in expected {
        match actual.get(path) {
            None => return Some(format!("{path} is missing")),
            Some(got) if got != want => {
                return Some(format!("{path} is {}, expected {}", describe(got), describe(want)))
            }
            Some(_) => {}
        }
    }
    actual.keys().find(|k| !expected.contains_key(*k)).map(|extra| format!("{extra} should not be there"))
}

/// A pristine device state kept for copying: a [`Device`] whose state directory is left as
/// a run finished it.
pub struct Pristine {
    /// The device holding the state.
    pub device: Device,
    /// The release it holds.
    pub release: u64,
}

impl Pristine {
    /// A fresh device on `channel` with a copy of this state directory.
    pub fn fork(&self, channel: &str, root: &Path) -> Device {
        let dev = Device::new(channel, root, "");
        copy_state(&self.device.state, &dev);
        dev
    }
}

/// One report record, as the device's outbox keeps it and the fleet database stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unix time it was made.
    pub at: i64,
    /// Event kind.
    pub kind: String,
    /// Release it concerns.
    pub release: Option<i64>,
    /// Failure reason code.
    pub reason: Option<String>,
    /// Text.
    pub message: String,
}

fn read_records(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> rusqlite::Result<Vec<(u64, Record)>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |r| {
        let rec = Record { at: r.get(1)?, kind: r.get(2)?, release: r.get(3)?, reason: r.get(4)?, message: r.get(5)? };
        Ok((r.get::<_, i64>(0)? as u64, rec))
    })?;
    rows.collect()
}

/// What the device's store says about its reports: the outbox, the newest sequence number
/// ever given, and the acknowledgement applied.
#[derive(Debug, Clone)]
pub struct DeviceReports {
    /// Pending records by sequence number.
    pub pending: BTreeMap<u64, Record>,
    /// The highest sequence number the device ever gave a record.
    pub made: u64,
    /// `outbox.acked`: records up to it were acknowledged and removed.
    pub acked: u64,
}

/// Reads `ferry.db` of a device whose agent is not running (read-only).
pub fn device_reports(state: &Path) -> Result<DeviceReports, Violation> {
    use rusqlite::OptionalExtension;
    let db = state.join("ferry.db");
    let sql = |e: rusqlite::Error| Violation(format!("{}: {e}", db.display()));
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sql)?;
    let pending = read_records(&conn, "SELECT seq, at, kind, release, reason, message FROM events", &[])
        .map_err(sql)?
        .into_iter()
        .collect();
    let made: Option<i64> = conn
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    let acked: Option<String> = conn
        .query_row("SELECT value FROM settings WHERE key = 'outbox.acked'", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    let acked = match acked {
        None => 0,
        Some(v) => v.parse().map_err(|e| Violation(format!("{}: outbox.acked = {v:?}: {e}", db.display())))?,
    };
    Ok(DeviceReports { pending, made: made.unwrap_or(0) as u64, acked })
}

/// What the fleet database holds for one device, read in one transaction.
#[derive(Debug, Clone)]
pub struct ServerReports {
    /// Stored records by sequence number.
    pub stored: BTreeMap<u64, Record>,
    /// Sequence numbers stored more than once (across key epochs).
    pub twice: Vec<u64>,
    /// The device's acknowledged sequence (0 when unknown).
    pub acked: u64,
}

/// Reads `device`'s reports from the fleet database `db` (which `bundler serve` may hold
/// open), after `PRAGMA integrity_check`. An absent database holds nothing.
pub fn server_reports(db: &Path, device: &str) -> Result<ServerReports, Violation> {
    use rusqlite::OptionalExtension;
    if !db.exists() {
        return Ok(ServerReports { stored: BTreeMap::new(), twice: Vec::new(), acked: 0 });
    }
    let sql = |e: rusqlite::Error| Violation(format!("{}: {e}", db.display()));
    let conn = Connection::open(db).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(sql)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(sql)?;
    if check != "ok" {
        violated!("{}: integrity_check says {check:?}", db.display());
    }
    let tx = conn.unchecked_transaction().map_err(sql)?;
    let rows = read_records(
        &tx,
        "SELECT seq, at, kind, release, reason, message FROM reports WHERE device_id = ?1 ORDER BY seq, epoch",
        &[&device],
    )
    .map_err(sql)?;
    let acked: Option<i64> = tx
        .query_row("SELECT acked FROM devices WHERE device_id = ?1", [device], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    let mut stored = BTreeMap::new();
    let mut twice = Vec::new();
    for (seq, rec) in rows {
        if stored.insert(seq, rec).is_some() {
            twice.push(seq);
        }
    }
    Ok(ServerReports { stored, twice, acked: acked.unwrap_or(0) as u64 })
}

/// Every report record one device made, as first seen on either side: a later sighting
/// that differs, a record stored twice, or one neither stored nor pending is a
/// [`Violation`].
#[derive(Debug, Default)]
pub struct ReportLedger {
    made: BTreeMap<u64, Record>,
}

impl ReportLedger {
    fn see(&mut self, seq: u64, rec: &Record, side: &str) -> Result<(), Violation> {
        match self.made.get(&seq) {
            Some(first) if first != rec => violated!("report #{seq} on the {side} is {rec:?}, first seen as {first:?}"),
            Some(_) => Ok(()),
            None => {
                self.made.insert(seq, rec.clone());
                Ok(())
            }
        }
    }

    /// Checks both sides of device `device` (state directory `state`, fleet database `db`):
    /// the server holds exactly `1..=acked` once each, as the device made them; every record
    /// the device ever numbered is stored or still pending; the device applied no
    /// acknowledgement beyond what was stored and keeps nothing it applied. Returns
    /// (stored, pending).
    pub fn observe(&mut self, state: &Path, db: &Path, device: &str) -> Result<(usize, usize), Violation> {
        let dev = device_reports(state)?;
        let server = server_reports(db, device)?;
        if !server.twice.is_empty() {
            violated!("reports stored more than once: {:?}", server.twice);
        }
        for (seq, rec) in &dev.pending {
            self.see(*seq, rec, "device")?;
        }
        for (seq, rec) in &server.stored {
            self.see(*seq, rec, "server")?;
        }
        if !server.stored.keys().copied().eq(1..=server.acked) {
            violated!("the server holds {} reports, not exactly 1..={}", server.stored.len(), server.acked);
        }
        let lost: Vec<u64> =
            (1..=dev.made).filter(|s| !server.stored.contains_key(s) && !dev.pending.contains_key(s)).collect();
        if !lost.is_empty() {
            violated!("reports neither stored nor pending (lost): {lost:?}");
        }
        if dev.acked > server.acked {
            violated!(
                "the device applied an acknowledgement ({}) beyond what was stored ({})",
                dev.acked,
                server.acked
            );
        }
        if let Some(seq) = dev.pending.keys().find(|s| **s <= dev.acked) {
            violated!("report #{seq} is still pending though the device applied an ack through {}", dev.acked);
        }
        Ok((server.stored.len(), dev.pending.len()))
    }

    /// [`ReportLedger::observe`] once the device says it delivered everything: the outbox is
    /// empty and the server holds every record the device made, `1..=made`, exactly once.
    pub fn delivered(&mut self, state: &Path, db: &Path, device: &str) -> Result<usize, Violation> {
        let (stored, pending) = self.observe(state, db, device)?;
        let made = device_reports(state)?.made;
        if pending != 0 {
            violated!("{pending} reports still pending after the final upload");
        }
        if stored as u64 != made {
            violated!("the server holds {stored} reports, the device made {made}");
        }
        if self.made.len() as u64 != made {
            violated!("{} reports seen over the run, the device made {made}", self.made.len());
        }
        Ok(stored)
    }
}
