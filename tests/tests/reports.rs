//! Issue 5's "Must show" for reports, end to end through the real `ferry-agent` and
//! `bundler` binaries (DESIGN "Reports"): a device that was offline for hundreds of events
//! delivers each exactly once; `kill -9` of `bundler serve` or of `ferry-agent run --once`
//! mid-upload loses and duplicates nothing; refused batches (unenrolled key, replayed,
//! tampered, oversized) stay on the device until a valid ingest acknowledges them; the
//! outbox keeps under its byte cap through a simulated month offline while keeping every
//! distinct failure; and the USB round trip moves a release out and the device's state
//! back into `bundler fleet`.
//!
//! The device side is checked in its own `events` table (the outbox), the operator side in
//! the fleet database's `reports` table, both read with rusqlite between runs. Refusals of
//! the device's own batches are staged by [`Relay`], a one-request-per-connection HTTP relay
//! between the agent and `bundler serve` that can hold an answer (so the agent is killed
//! after the server stored a batch and before the agent heard of it), flip a byte, pad the
//! body past 1 MiB, or send an old batch again.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_proto::report::ReportBatch;
use ferry_proto::{Limits, PublicKey};
use ferry_tests::fixture::{Device, Operator};
use ferry_tests::serve_process::ServeProcess;
use ferry_tests::{binaries, run, Run};

const DEVICE: &str = "test-device";

/// Records per batch the agent sends at most (`outbox::MAX_BATCH_RECORDS`).
const BATCH_RECORDS: u64 = 500;

/// Fast retries, so an upload to a dead or killed server gives up in well under a second.
const FAST_RETRIES: &str = "[fetch]\nmax_backoff = \"10ms\"\n";

// --- the device -------------------------------------------------------------------------

/// Rewrites the device's config: the fixture's first lines, then `extra`.
fn configure(dev: &Device, extra: &str) {
    let text = format!(
        "channel = \"stable\"\ntrust_root = \"root.1\"\nstate_dir = \"state\"\ndevice_id = \"{DEVICE}\"\n{extra}"
    );
    fs::write(&dev.config, text).expect("write config");
}

/// `[reports]` pointing at `url` with the outbox capped at `max_outbox_bytes`; fast retries.
fn reports_config(url: &str, max_outbox_bytes: u64) -> String {
    format!("{FAST_RETRIES}[reports]\nurl = \"{url}\"\nmax_outbox_bytes = {max_outbox_bytes}\n")
}

/// `ferry-agent` with no proxy from the environment and default logging.
fn agent(dev: &Device, args: &[&str]) -> Command {
    let mut cmd = dev.agent(args);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "FERRY_LOG"] {
        cmd.env_remove(var);
    }
    cmd
}

/// `ferry-agent run --once`; it exits 0 or 1 (never killed, never a panic).
fn run_once(dev: &Device) -> Run {
    let r = run(&mut agent(dev, &["run", "--once"]));
    assert!(matches!(r.code, 0 | 1), "run --once crashed ({}):\n{}", r.code, r.all());
    r
}

/// `ferry-agent run --once` in the background, its stderr in `log`.
fn spawn_run_once(dev: &Device, log: &Path) -> Child {
    let stderr = fs::File::create(log).expect("log file");
    agent(dev, &["run", "--once"]).stdout(Stdio::null()).stderr(stderr).spawn().expect("spawn ferry-agent")
}

/// A port nothing listens on.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/v1/reports")
}

/// One report record, as the device keeps it and the server stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    at: i64,
    kind: String,
    release: Option<i64>,
    reason: Option<String>,
    message: String,
}

impl Rec {
    /// What compaction tells failures apart by.
    fn failure_key(&self) -> Option<(String, String, Option<i64>)> {
        self.reason.clone().map(|reason| (self.kind.clone(), reason, self.release))
    }
}

fn open_db(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(30)).expect("busy timeout");
    conn
}

fn device_db(dev: &Device) -> rusqlite::Connection {
    open_db(&dev.state.join("ferry.db"))
}

/// The outbox: every pending record by sequence number.
fn outbox(dev: &Device) -> BTreeMap<u64, Rec> {
    let conn = device_db(dev);
    let mut stmt = conn.prepare("SELECT seq, at, kind, release, reason, message FROM events").expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            let rec = Rec { at: r.get(1)?, kind: r.get(2)?, release: r.get(3)?, reason: r.get(4)?, message: r.get(5)? };
            Ok((r.get::<_, i64>(0)? as u64, rec))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// The outbox's size, measured as `agent/src/outbox.rs` measures it.
fn outbox_bytes(dev: &Device) -> u64 {
    let conn = device_db(dev);
    let n: i64 = conn
        .query_row("SELECT COALESCE(SUM(length(CAST(message AS BLOB)) + 64), 0) FROM events", [], |r| r.get(0))
        .expect("size");
    n as u64
}

/// A numeric setting of the device's store (0 when absent).
fn device_setting(dev: &Device, key: &str) -> u64 {
    use rusqlite::OptionalExtension;
    let conn = device_db(dev);
    let v: Option<String> =
        conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional().expect("setting");
    v.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The highest sequence number the device ever gave an event.
fn last_seq_made(dev: &Device) -> u64 {
    use rusqlite::OptionalExtension;
    let conn = device_db(dev);
    let seq: Option<i64> = conn
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0))
        .optional()
        .expect("sqlite_sequence");
    seq.unwrap_or(0) as u64
}

fn assert_intact(path: &Path) {
    let conn = open_db(path);
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(check, "ok", "{}", path.display());
}

/// `DIR` with `n` files named `*.ferry` that are not: one `rejected` (`malformed`) event
/// each on `ferry-agent import DIR`.
fn junk_dir(parent: &Path, name: &str, n: usize) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..n {
        fs::write(dir.join(format!("junk-{i:04}.ferry")), format!("not a release {i}\n")).expect("write junk");
    }
    dir
}

/// `ferry-agent identity --json`: its public key.
fn identity(dev: &Device) -> PublicKey {
    let r = run(&mut agent(dev, &["identity", "--json"])).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("identity json");
    PublicKey::from_pem(v["public_key"].as_str().expect("pem")).expect("public key")
}

/// `ferry-agent identity > FILE; bundler devices enroll test-device FILE --db DB`.
fn enroll(dev: &Device, db: &Path, extra: &[&str]) -> Run {
    let printed = run(&mut agent(dev, &["identity"])).ok();
    let file = dev.dir.path().join("identity.txt");
    fs::write(&file, &printed.stdout).expect("write identity");
    run(bundler(&["devices", "enroll", DEVICE]).arg(&file).arg("--db").arg(db).args(extra))
}

// --- the operator -------------------------------------------------------------------------

fn bundler(args: &[&str]) -> Command {
    let mut c = Command::new(&binaries().bundler);
    c.args(args).env_remove("FERRY_LOG");
    c
}

/// Every record the server stored for the device, asserting none is stored twice (across
/// key epochs too).
fn server_records(db: &Path) -> BTreeMap<u64, Rec> {
    records_in(&open_db(db))
}

fn records_in(conn: &rusqlite::Connection) -> BTreeMap<u64, Rec> {
    let twice: Vec<i64> = {
        let mut stmt = conn
            .prepare("SELECT seq FROM reports WHERE device_id = ?1 GROUP BY seq HAVING COUNT(*) > 1")
            .expect("prepare");
        let rows = stmt.query_map([DEVICE], |r| r.get(0)).expect("query");
        rows.map(|r| r.expect("row")).collect()
    };
    assert!(twice.is_empty(), "records stored more than once: {twice:?}");
    let mut stmt = conn
        .prepare("SELECT seq, at, kind, release, reason, message FROM reports WHERE device_id = ?1")
        .expect("prepare");
    let rows = stmt
        .query_map([DEVICE], |r| {
            let rec = Rec { at: r.get(1)?, kind: r.get(2)?, release: r.get(3)?, reason: r.get(4)?, message: r.get(5)? };
            Ok((r.get::<_, i64>(0)? as u64, rec))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// The device's acknowledged sequence in the fleet database (0 when unknown).
fn server_acked(conn: &rusqlite::Connection) -> u64 {
    use rusqlite::OptionalExtension;
    let acked: Option<i64> = conn
        .query_row("SELECT acked FROM devices WHERE device_id = ?1", [DEVICE], |r| r.get(0))
        .optional()
        .expect("acked");
    acked.unwrap_or(0) as u64
}

fn fleet_device(db: &Path, mirror: Option<&Path>) -> serde_json::Value {
    let mut c = bundler(&["fleet", "--json", "--db"]);
    c.arg(db);
    if let Some(m) = mirror {
        c.arg("--mirror").arg(m);
    }
    let v: serde_json::Value = serde_json::from_str(&run(&mut c).ok().stdout).expect("fleet json");
    let found = v["devices"].as_array().expect("devices").iter().find(|d| d["device_id"] == DEVICE).cloned();
    let mut d = found.unwrap_or_else(|| panic!("{DEVICE} not in the fleet view: {v}"));
    d["releases"] = v["releases"].clone();
    d
}

/// A running `bundler serve` (reports only); SIGKILLed and reaped on drop.
struct Serve {
    process: ServeProcess,
    url: String,
}

impl Serve {
    fn start(db: &Path) -> Serve {
        let mut cmd = bundler(&["serve", "--listen", "127.0.0.1:0", "--db"]);
        cmd.arg(db);
        let process = ServeProcess::spawn(&mut cmd);
        let url = format!("http://{}/v1/reports", process.addr);
        Serve { process, url }
    }

    fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    fn kill9(&mut self) {
        self.process.kill();
    }

    /// What it logged so far (all of it once killed: the pipe is drained).
    fn stderr(&self) -> String {
        self.process.stderr()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

// --- nothing lost, nothing twice ------------------------------------------------------------

/// Every record the device ever made, as first seen on either side; later sightings must
/// be identical.
#[derive(Default)]
struct Ledger {
    made: BTreeMap<u64, Rec>,
}

impl Ledger {
    fn see(&mut self, seq: u64, rec: &Rec, side: &str) {
        match self.made.entry(seq) {
            Entry::Occupied(e) => assert_eq!(e.get(), rec, "record #{seq} differs on the {side}"),
            Entry::Vacant(e) => {
                e.insert(rec.clone());
            }
        }
    }

    /// Both databases intact; the server holds exactly `1..=acked`, each once and as the
    /// device made it; every record the device ever made (no compaction here) is on the
    /// server or still in the outbox. Returns (stored, pending).
    fn check(&mut self, dev: &Device, db: &Path, when: &str) -> (BTreeMap<u64, Rec>, BTreeMap<u64, Rec>) {
        assert_intact(&dev.state.join("ferry.db"));
        let pending = outbox(dev);
        let (stored, acked) = if db.exists() {
            assert_intact(db);
            // One read transaction: records and acknowledgement of the same instant.
            let conn = open_db(db);
            let tx = conn.unchecked_transaction().expect("read transaction");
            let state = (records_in(&tx), server_acked(&tx));
            tx.commit().expect("end read transaction");
            state
        } else {
            (BTreeMap::new(), 0)
        };
        for (seq, rec) in &pending {
            self.see(*seq, rec, "device");
        }
        for (seq, rec) in &stored {
            self.see(*seq, rec, "server");
        }
        assert!(
            stored.keys().copied().eq(1..=acked),
            "{when}: the server holds {} records, not exactly 1..={acked}",
            stored.len()
        );
        let made = last_seq_made(dev);
        let lost: Vec<u64> = (1..=made).filter(|s| !stored.contains_key(s) && !pending.contains_key(s)).collect();
        assert!(lost.is_empty(), "{when}: records neither stored nor pending: {lost:?}");
        let device_acked = device_setting(dev, "outbox.acked");
        assert!(device_acked <= acked, "{when}: the device applied an ack ({device_acked}) beyond what was stored");
        assert!(pending.keys().all(|s| *s > device_acked), "{when}: records up to the ack are still pending");
        (stored, pending)
    }
}

/// `run --once` until the outbox is empty (the runs' own `agent-start` events included).
fn deliver(dev: &Device) {
    for _ in 0..4 {
        let r = run_once(dev);
        if outbox(dev).is_empty() {
            return;
        }
        eprintln!("outbox not empty yet:\n{}", r.stderr);
    }
    panic!("the outbox still holds {} records after 4 runs", outbox(dev).len());
}

// --- a relay between the agent and the server ----------------------------------------------

/// What [`Relay`] does to each upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward as is.
    Pass,
    /// Forward, then hold the answer this long before passing it on.
    Hold(Duration),
    /// Flip one byte of a record's message inside the signed envelope.
    Tamper,
    /// Append a zstd skippable frame that takes the body past 1 MiB.
    Oversize,
    /// Send instead the first batch the server stored through this relay.
    Replay,
}

/// One upload as the relay saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// Records in the batch the agent sent, and its first and last sequence numbers.
    records: usize,
    first: u64,
    last: u64,
    /// The server's answer.
    status: u16,
    answer: String,
}

struct RelayState {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    log: Mutex<Vec<Seen>>,
    /// The first batch the server stored (for [`Mode::Replay`]).
    first_body: Mutex<Option<Vec<u8>>>,
    /// Answers received from the server (counted before any hold).
    answered: AtomicUsize,
    /// Uploads being relayed now.
    in_flight: AtomicUsize,
    /// Set when the server was killed: held answers are dropped, not delivered.
    cut: AtomicBool,
    stop: AtomicBool,
}

/// A one-request-per-connection HTTP/1.1 relay to `bundler serve`.
struct Relay {
    url: String,
    state: Arc<RelayState>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}/v1/reports", listener.local_addr().expect("addr"));
        let state = Arc::new(RelayState {
            upstream,
            mode: Mutex::new(Mode::Pass),
            log: Mutex::new(Vec::new()),
            first_body: Mutex::new(None),
            answered: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = Arc::clone(&shared);
                        s.in_flight.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            let _ = relay_one(client, &s);
                            s.in_flight.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Relay { url, state }
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// The uploads seen since the last call.
    fn take_log(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.state.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// With `true`, drops every held answer and every later one, as a dead server would.
    fn cut(&self, cut: bool) {
        self.state.cut.store(cut, Ordering::SeqCst);
    }

    /// Waits until no upload is being relayed (one whose client was killed still reaches
    /// the server).
    fn settle(&self) {
        wait_for("the relay to settle", Duration::from_secs(60), || self.state.in_flight.load(Ordering::SeqCst) == 0);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request (head and `Content-Length` body).
fn read_request(client: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

fn relay_one(mut client: TcpStream, s: &RelayState) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let (head, body) = read_request(&mut client)?;
    let mode = *s.mode.lock().unwrap_or_else(PoisonError::into_inner);
    let sent = zstd::decode_all(&body[..]).ok().and_then(|env| ReportBatch::peek(&env, &Limits::default()).ok());
    let body = match mode {
        Mode::Pass | Mode::Hold(_) => body,
        Mode::Tamper => tamper(&body),
        Mode::Oversize => oversize(&body),
        Mode::Replay => s.first_body.lock().unwrap_or_else(PoisonError::into_inner).clone().expect("a batch to replay"),
    };
    let mut request = String::new();
    for line in head.split("\r\n") {
        let name = line.split(':').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("connection") {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    let mut up = TcpStream::connect(s.upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(request.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    s.answered.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let answer_body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
    if status == 200 && matches!(mode, Mode::Pass | Mode::Hold(_)) {
        s.first_body.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(|| body.clone());
    }
    if let Some(b) = sent {
        let seen = Seen {
            records: b.records.len(),
            first: b.records.first().map_or(0, |r| r.seq),
            last: b.last_seq(),
            status,
            answer: answer_body,
        };
        s.log.lock().unwrap_or_else(PoisonError::into_inner).push(seen);
    }
    if let Mode::Hold(d) = mode {
        let until = Instant::now() + d;
        while Instant::now() < until && !s.cut.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if s.cut.load(Ordering::SeqCst) {
        // The server is gone: its answer never reaches the agent.
        return Ok(());
    }
    client.write_all(&answer)
}

/// The same batch with one byte of a record's message changed (the signature no longer
/// covers it).
fn tamper(body: &[u8]) -> Vec<u8> {
    let mut envelope = zstd::decode_all(body).expect("a zstd batch");
    let at = envelope.windows(9).position(|w| w == b"bad magic").expect("a junk rejection message in the batch");
    envelope[at] ^= 0x20;
    zstd::encode_all(&envelope[..], 3).expect("zstd")
}

/// The same batch followed by a skippable zstd frame: over the server's 1 MiB cap.
fn oversize(body: &[u8]) -> Vec<u8> {
    let pad = (1usize << 20) + 4096;
    let mut out = body.to_vec();
    out.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    out.extend_from_slice(&(pad as u32).to_le_bytes());
    out.resize(out.len() + pad, 0);
    out
}

/// splitmix64, seeded from `FERRY_TEST_SEED` or the clock (printed, to replay a failure).
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("FERRY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        eprintln!("{test}: FERRY_TEST_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Waits (polling) until `done`, or panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// --- the tests ----------------------------------------------------------------------------

#[test]
fn five_hundred_events_offline_are_delivered_exactly_once_when_the_link_returns() {
    let op = Operator::new();
    let dev = Device::new("stable", &op.root1(), "");
    configure(&dev, &reports_config(&dead_url(), 1 << 20));

    // Offline: five imports of a stick with 100 unusable files (one `rejected` event
    // each), and polls whose uploads find nobody listening.
    let junk = junk_dir(dev.dir.path(), "stick", 100);
    for _ in 0..5 {
        let r = run(agent(&dev, &["import"]).arg(&junk)).code(1);
        assert!(r.stdout.starts_with("rejected: malformed"), "{}", r.all());
        let r = run_once(&dev);
        assert!(r.stderr.contains("report upload stopped"), "{}", r.stderr);
    }
    let before = outbox(&dev);
    assert!(before.len() >= 505, "{} events", before.len());
    assert_eq!(before.values().filter(|r| r.kind == "rejected").count(), 500);
    assert!(before.keys().copied().eq(1..=before.len() as u64), "nothing was compacted or sent");
    assert_eq!(device_setting(&dev, "outbox.dropped"), 0);

    // The link returns: the operator enrols the device, the device polls.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    let r = enroll(&dev, &db, &[]).ok();
    assert!(r.stdout.contains(&format!("enrolled device {DEVICE}")), "{}", r.stdout);
    let serve = Serve::start(&db);
    configure(&dev, &reports_config(&serve.url, 1 << 20));
    deliver(&dev);

    let stored = server_records(&db);
    for (seq, rec) in &before {
        assert_eq!(stored.get(seq), Some(rec), "record #{seq} missing or altered on the server");
    }
    let made = last_seq_made(&dev);
    assert!(stored.keys().copied().eq(1..=made), "the server holds {} records, not 1..={made}", stored.len());
    assert!(outbox(&dev).is_empty());
    let d = fleet_device(&db, None);
    assert_eq!(d["acked"].as_u64(), Some(made), "{d}");
    assert!(d["batches"].as_u64().is_some_and(|b| b >= 2), "more than one batch: {d}");
    assert_eq!((d["dropped_total"].as_u64(), d["last_failure"].as_str()), (Some(0), Some("malformed")), "{d}");
    assert_intact(&db);
    assert_intact(&dev.state.join("ferry.db"));
}

#[test]
fn kill_9_of_the_server_during_an_upload_loses_and_duplicates_nothing() {
    const RECORDS: usize = 4000;
    let mut rng = Rng::new("kill_9_of_the_server");
    let op = Operator::new();
    let dev = Device::new("stable", &op.root1(), "");
    dev.status();
    dev.seed_outbox(RECORDS, "seeded event", 12);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    enroll(&dev, &db, &[]).ok();
    let mut ledger = Ledger::default();
    ledger.check(&dev, &db, "before any upload");

    let mut logs = String::new();

    // First, deterministically: the server commits the first batch and is killed before its
    // answer leaves (the answer is held at a relay, then dropped).
    {
        let mut serve = Serve::start(&db);
        let relay = Relay::start(serve.addr());
        relay.set(Mode::Hold(Duration::from_secs(30)));
        configure(&dev, &reports_config(&relay.url, 64 << 20));
        let mut child = spawn_run_once(&dev, &dir.path().join("agent-0.log"));
        wait_for("the first answer", Duration::from_secs(60), || relay.answered() >= 1);
        serve.kill9();
        relay.cut(true);
        let status = child.wait().expect("wait for the agent");
        assert!(matches!(status.code(), Some(0 | 1)), "the agent died: {status:?}");
        relay.settle();
        logs.push_str(&serve.stderr());
        let (stored, pending) = ledger.check(&dev, &db, "after kill -9 of the server before its answer");
        assert_eq!(stored.len() as u64, BATCH_RECORDS, "the first batch is stored");
        assert_eq!(pending.keys().next(), Some(&1), "and still pending on the device");
    }

    // Then at random instants: once a random number of further batches is stored (round 1:
    // right after the first), after a random pause of up to 40 ms.
    let mut mid_upload = 0;
    for round in 1..8 {
        let mut serve = Serve::start(&db);
        configure(&dev, &reports_config(&serve.url, 64 << 20));
        let conn = open_db(&db);
        let start = server_acked(&conn);
        let made = last_seq_made(&dev);
        if made.saturating_sub(start) < BATCH_RECORDS {
            break;
        }
        let batches = made.saturating_sub(start).div_ceil(BATCH_RECORDS);
        let further = if round == 1 { 1 } else { rng.below(batches) };
        let pause = Duration::from_millis(if round == 1 { 0 } else { rng.below(40) });
        let mut child = spawn_run_once(&dev, &dir.path().join(format!("agent-{round}.log")));
        wait_for("the server to store batches", Duration::from_secs(60), || {
            server_acked(&conn) >= start + further * BATCH_RECORDS || child.try_wait().ok().flatten().is_some()
        });
        std::thread::sleep(pause);
        serve.kill9();
        let status = child.wait().expect("wait for the agent");
        assert!(matches!(status.code(), Some(0 | 1)), "the agent died: {status:?}");
        drop(conn);
        logs.push_str(&serve.stderr());

        let (stored, pending) = ledger.check(&dev, &db, &format!("after kill -9 of the server in round {round}"));
        let acked = stored.keys().last().copied().unwrap_or(0);
        if acked > start && !pending.is_empty() {
            mid_upload += 1;
        }
        eprintln!(
            "round {round}: kill after {further} batch(es) + {pause:?}: server acked {start} -> {acked}, {} pending",
            pending.len()
        );
    }
    eprintln!("{mid_upload} random kills landed mid-upload");
    assert!(mid_upload >= 1, "no kill landed in the middle of an upload");

    let mut serve = Serve::start(&db);
    configure(&dev, &reports_config(&serve.url, 64 << 20));
    deliver(&dev);
    let (stored, pending) = ledger.check(&dev, &db, "after the last upload");
    assert!(pending.is_empty());
    assert_eq!(stored.len() as u64, last_seq_made(&dev));
    assert!(stored.len() > RECORDS);
    serve.kill9();
    logs.push_str(&serve.stderr());
    assert!(
        logs.contains("reason=\"replay\""),
        "the batch stored without an answer came again and was recognised:\n{logs}"
    );
}

#[test]
fn kill_9_of_the_agent_during_an_upload_loses_and_duplicates_nothing() {
    const RECORDS: usize = 1500;
    let mut rng = Rng::new("kill_9_of_the_agent");
    let op = Operator::new();
    let dev = Device::new("stable", &op.root1(), "");
    dev.status();
    dev.seed_outbox(RECORDS, "seeded event", 12);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    enroll(&dev, &db, &[]).ok();
    let serve = Serve::start(&db);
    let relay = Relay::start(serve.addr());
    configure(&dev, &reports_config(&relay.url, 64 << 20));
    let mut ledger = Ledger::default();
    ledger.check(&dev, &db, "before any upload");

    // The server stores the first batch; its answer is held, and the agent killed before it
    // arrives: the server has records the device still holds.
    relay.set(Mode::Hold(Duration::from_secs(60)));
    let mut child = spawn_run_once(&dev, &dir.path().join("agent-0.log"));
    wait_for("the first answer", Duration::from_secs(60), || relay.answered() >= 1);
    child.kill().expect("kill -9 the agent");
    let _ = child.wait();
    relay.cut(true);
    relay.settle();
    relay.cut(false);
    let (stored, pending) = ledger.check(&dev, &db, "after kill -9 of the agent awaiting its ack");
    assert_eq!(stored.len() as u64, BATCH_RECORDS, "the first batch is stored");
    assert_eq!(pending.keys().next(), Some(&1), "and still pending on the device: {:?}", relay.take_log());

    // Kills at random instants: a few more batches to send each round, short holds on every
    // answer, and the kill a random pause after a random number of answers (so it lands while
    // the agent awaits an answer, applies one, or makes the next batch).
    let mut mid_upload = 0;
    for round in 1..6 {
        dev.seed_outbox(1000, "seeded event", 12);
        let hold = Duration::from_millis(1 + rng.below(30));
        relay.set(Mode::Hold(hold));
        // Round 1: right after its first answer; then anywhere from its start to its third.
        let answers = relay.answered() + if round == 1 { 1 } else { rng.below(4) as usize };
        let pause = Duration::from_millis(if round == 1 { 0 } else { rng.below(hold.as_millis() as u64 + 20) });
        let answered = relay.answered();
        let mut child = spawn_run_once(&dev, &dir.path().join(format!("agent-{round}.log")));
        wait_for("answers", Duration::from_secs(60), || {
            relay.answered() >= answers || child.try_wait().ok().flatten().is_some()
        });
        std::thread::sleep(pause);
        let _ = child.kill();
        let _ = child.wait();
        relay.settle();
        let (stored, pending) = ledger.check(&dev, &db, &format!("after kill -9 of the agent in round {round}"));
        if relay.answered() > answered && !pending.is_empty() {
            mid_upload += 1;
        }
        eprintln!(
            "round {round}: kill {pause:?} after answer {answers} (holds {hold:?}): {} stored, {} pending",
            stored.len(),
            pending.len()
        );
    }
    assert!(mid_upload >= 1, "no kill landed in the middle of an upload");

    relay.set(Mode::Pass);
    deliver(&dev);
    let (stored, pending) = ledger.check(&dev, &db, "after the last upload");
    assert!(pending.is_empty());
    assert_eq!(stored.len() as u64, last_seq_made(&dev));
    let log = relay.take_log();
    assert!(
        log.iter().any(|s| s.status == 409 && s.answer.contains("replay") && (s.first, s.last) == (1, BATCH_RECORDS)),
        "the batch stored but never acknowledged came again and was answered as a replay: {log:?}"
    );
}

#[test]
fn refused_batches_stay_on_the_device_until_a_valid_ingest_acknowledges_them() {
    let op = Operator::new();
    let dev = Device::new("stable", &op.root1(), "");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    let serve = Serve::start(&db);
    let relay = Relay::start(serve.addr());
    configure(&dev, &reports_config(&relay.url, 1 << 20));
    let junk = junk_dir(dev.dir.path(), "stick", 20);
    run(agent(&dev, &["import"]).arg(&junk)).code(1);
    let mut ledger = Ledger::default();

    // Unenrolled.
    let r = run_once(&dev);
    let (stored, pending) = ledger.check(&dev, &db, "refused as unenrolled");
    assert!(stored.is_empty());
    assert!(pending.keys().copied().eq(1..=21), "{pending:?}");
    assert!(r.stderr.contains("403") && r.stderr.contains("enrol"), "{}", r.stderr);

    // Enrolled, but with another device's key.
    let other = Device::new("stable", &op.root1(), "");
    let file = other.dir.path().join("other.pub");
    fs::write(&file, identity(&other).to_pem()).expect("write key");
    run(bundler(&["devices", "enroll", DEVICE]).arg(&file).arg("--db").arg(&db)).ok();
    run_once(&dev);
    let (stored, pending) = ledger.check(&dev, &db, "refused as signed by a key not enrolled");
    assert!(stored.is_empty());
    assert_eq!(pending.len(), 22);
    let log = relay.take_log();
    assert!(log.len() == 2 && log.iter().all(|s| s.status == 403 && s.first == 1), "{log:?}");

    // The right key: everything so far is delivered (and kept by the relay for a replay).
    let r = enroll(&dev, &db, &["--replace"]).ok();
    assert!(r.stdout.contains("re-enrolled"), "{}", r.stdout);
    deliver(&dev);
    let (stored, _) = ledger.check(&dev, &db, "delivered");
    assert_eq!(stored.len(), 23);
    relay.take_log();

    // New events, then a tampered, an oversized and a replayed batch: each refused, the
    // records kept.
    run(agent(&dev, &["import"]).arg(&junk)).code(1);
    relay.set(Mode::Tamper);
    run_once(&dev);
    let log = relay.take_log();
    assert!(log.len() == 1 && log[0].status == 400 && log[0].answer.contains("signature"), "tampered batch: {log:?}");
    let (stored, pending) = ledger.check(&dev, &db, "tampered batch refused");
    assert_eq!((stored.len(), pending.len()), (23, 21));

    relay.set(Mode::Oversize);
    run_once(&dev);
    let log = relay.take_log();
    let sizes: Vec<usize> = log.iter().map(|s| s.records).collect();
    assert!(log.iter().all(|s| s.status == 413), "{log:?}");
    assert_eq!(sizes, [22, 11, 5, 2, 1], "halved down to one record, then given up: {log:?}");
    let (stored, pending) = ledger.check(&dev, &db, "oversized batch refused");
    assert_eq!((stored.len(), pending.len()), (23, 22));

    relay.set(Mode::Replay);
    run_once(&dev);
    let log = relay.take_log();
    assert!(log.len() == 1 && log[0].status == 409 && log[0].answer.contains("\"acked\":23"), "replay: {log:?}");
    let (stored, pending) = ledger.check(&dev, &db, "replayed batch refused");
    assert_eq!((stored.len(), pending.len()), (23, 23));

    // A valid ingest: now, and only now, they go.
    relay.set(Mode::Pass);
    deliver(&dev);
    let (stored, pending) = ledger.check(&dev, &db, "finally delivered");
    assert!(pending.is_empty());
    assert_eq!(stored.len() as u64, last_seq_made(&dev));
    let d = fleet_device(&db, None);
    assert_eq!(d["acked"].as_u64(), Some(stored.len() as u64), "{d}");
}

/// A `.ferry` file copied out of the mirror, so later releases cannot touch it.
fn keep_payload(op: &Operator, channel: &str, name: &str) -> PathBuf {
    let from = op.latest_payloads(channel).remove("full").expect("full payload");
    let to = op.dir.path().join(name);
    fs::copy(from, &to).expect("copy payload");
    to
}

#[test]
fn a_month_offline_stays_under_the_outbox_cap_and_keeps_every_failure() {
    const CAP: u64 = 65536;
    const DAY: u64 = 86_400;
    let op = Operator::new();
    // Releases that fail on the device in distinct ways.
    op.write(&[("app.conf", Some("v = 1\n"))]);
    op.commit("one");
    op.release("stable", None, &["--deltas", "0"]).ok();
    let r1 = keep_payload(&op, "stable", "r1.ferry");
    op.write(&[("app.conf", Some("v = 2\n"))]);
    op.commit("two");
    op.release("stable", None, &["--deltas", "0", "--not-after", "5d"]).ok();
    let r2_expires = keep_payload(&op, "stable", "r2.ferry");
    op.write(&[("app.conf", Some("v = 3\n"))]);
    op.commit("three");
    op.release("stable", None, &["--deltas", "0"]).ok();
    let r3_corrupt = keep_payload(&op, "stable", "r3.ferry");
    let mut bytes = fs::read(&r3_corrupt).expect("read");
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    fs::write(&r3_corrupt, bytes).expect("corrupt payload");
    op.write(&[("app.conf", Some("v = 4\n"))]);
    op.commit("four");
    op.release("stable", None, &["--deltas", "0", "--require-label", "site=elsewhere"]).ok();
    let r4_other_site = keep_payload(&op, "stable", "r4.ferry");
    op.release("beta", None, &["--deltas", "0"]).ok();
    let beta = keep_payload(&op, "beta", "beta.ferry");

    let dev = Device::new("stable", &op.root1(), "");
    let dead = dead_url();
    let mirror = dead.trim_end_matches("v1/reports");
    configure(&dev, &format!("mirrors = [\"{mirror}\"]\n{}", reports_config(&dead, CAP)));
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let junk = junk_dir(dev.dir.path(), "junk", 30);
    let special: BTreeMap<u64, &Path> = [
        (0, r1.as_path()),
        (3, r3_corrupt.as_path()),
        (7, r2_expires.as_path()),
        (10, r4_other_site.as_path()),
        (14, beta.as_path()),
        (18, r1.as_path()),
    ]
    .into_iter()
    .collect();

    // Newest sequence number of every distinct failure ever recorded.
    let mut failures: BTreeMap<(String, String, Option<i64>), u64> = BTreeMap::new();
    let mut note = |dev: &Device| {
        for (seq, rec) in outbox(dev) {
            if let Some(key) = rec.failure_key() {
                let newest = failures.entry(key).or_insert(seq);
                *newest = (*newest).max(seq);
            }
        }
    };
    let mut sizes = Vec::new();
    let mut peak_after_import = 0;
    for day in 0..=30u64 {
        let now = |hour: u64| (start + day * DAY + hour * 3600).to_string();
        if let Some(file) = special.get(&day) {
            run(agent(&dev, &["import"]).arg(file).env("FERRY_FAKE_NOW", now(7)));
            note(&dev);
        }
        run(agent(&dev, &["import"]).arg(&junk).env("FERRY_FAKE_NOW", now(8))).code(1);
        note(&dev);
        // Imports record without compacting; the next cycle brings the outbox back.
        peak_after_import = peak_after_import.max(outbox_bytes(&dev));
        for hour in [9, 21] {
            let r = run(agent(&dev, &["run", "--once"]).env("FERRY_FAKE_NOW", now(hour)));
            assert_eq!(r.code, 1, "a dead mirror: not converged\n{}", r.all());
            note(&dev);
            let size = outbox_bytes(&dev);
            assert!(size <= CAP, "day {day} {hour}h: the outbox holds {size} bytes, over its cap {CAP}");
            sizes.push(size);
        }
    }
    assert_eq!(dev.applied_release(), Some(1));
    let held = outbox(&dev);
    let made = last_seq_made(&dev);
    let dropped = device_setting(&dev, "outbox.dropped");
    eprintln!(
        "{made} events in a month, {} held ({} bytes, {peak_after_import} at most after an import), {dropped} \
         dropped; distinct failures: {:?}",
        held.len(),
        outbox_bytes(&dev),
        failures.keys().collect::<Vec<_>>()
    );
    assert!(sizes.iter().any(|s| *s > CAP * 9 / 10), "the cap was never approached: {sizes:?}");
    assert_eq!(dropped, made - held.len() as u64, "every event is held or counted as dropped");
    assert!(dropped > 0);
    // Every distinct failure is still there, as its newest occurrence; so is the finding
    // that release 1 was applied.
    let reasons: BTreeSet<&str> = failures.keys().map(|(_, reason, _)| reason.as_str()).collect();
    assert!(failures.len() >= 7 && reasons.len() >= 6, "too few distinct failures staged: {failures:?}");
    for (key, seq) in &failures {
        assert_eq!(
            held.get(seq).and_then(Rec::failure_key).as_ref(),
            Some(key),
            "failure {key:?} (#{seq}) was dropped"
        );
    }
    assert!(held.values().any(|r| r.kind == "applied" && r.release == Some(1)), "the applied finding was dropped");

    // The next batch says how many were dropped.
    let key = identity(&dev);
    let stick = tempfile::tempdir().expect("stick");
    run(agent(&dev, &["export-reports"]).arg(stick.path())).ok();
    let files = fs::read_dir(stick.path().join("reports").join(DEVICE)).expect("batch files");
    let mut batches: Vec<ReportBatch> = files
        .map(|f| {
            let envelope = zstd::decode_all(&fs::read(f.expect("entry").path()).expect("read")[..]).expect("zstd");
            ReportBatch::verify(&envelope, &key, &Limits::default()).expect("verifies with the device key")
        })
        .collect();
    batches.sort_by_key(|b| b.records.first().map(|r| r.seq));
    assert_eq!(batches[0].dropped, dropped, "the first batch carries the dropped count");
    assert_eq!(batches.iter().map(|b| b.records.len()).sum::<usize>(), held.len());

    // And once the link is back, the server learns the same.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    enroll(&dev, &db, &[]).ok();
    let serve = Serve::start(&db);
    configure(&dev, &reports_config(&serve.url, CAP));
    deliver(&dev);
    let stored = server_records(&db);
    let d = fleet_device(&db, None);
    let made = last_seq_made(&dev);
    assert_eq!(d["dropped_total"].as_u64(), Some(made - stored.len() as u64), "{d}");
    for (key, seq) in &failures {
        assert_eq!(stored.get(seq).and_then(Rec::failure_key).as_ref(), Some(key), "failure {key:?} not delivered");
    }
    assert_eq!(device_setting(&dev, "outbox.dropped"), 0, "the acknowledged count is cleared");
}

#[test]
fn usb_round_trip_brings_a_release_out_and_the_device_state_home() {
    let op = Operator::new();
    op.write(&[("app.conf", Some("setting = 1\n"))]);
    op.commit("first");
    op.release("stable", None, &[]).ok();
    let stick = op.dir.path().join("stick");
    let export = |op: &Operator| {
        run(op.bundler(&["export", "--mirror"]).arg(&op.mirror).args(["--channel", "stable", "--to"]).arg(&stick)).ok()
    };
    export(&op);
    let dev = Device::new("stable", &op.root1(), "");
    let db = op.dir.path().join("fleet.db");
    let mut ledger = Ledger::default();

    // At the device: the release comes in, the reports go out.
    let r = run(agent(&dev, &["import"]).arg(&stick)).ok();
    assert!(r.stdout.contains("applied release 1"), "{}", r.stdout);
    let r = run(agent(&dev, &["export-reports"]).arg(&stick)).ok();
    assert!(r.stdout.contains("stay on this device until acknowledged"), "{}", r.stdout);
    let sent = outbox(&dev);
    ledger.check(&dev, &db, "exported");

    // At the operator's desk.
    enroll(&dev, &db, &[]).ok();
    let r = run(bundler(&["reports", "import"]).arg(&stick).arg("--db").arg(&db)).ok();
    assert!(r.stdout.contains(&format!("ack acks/{DEVICE}.ack: acked {}", sent.len())), "{}", r.stdout);
    let d = fleet_device(&db, Some(&op.mirror));
    assert_eq!(
        (d["release"].as_u64(), d["health"].as_str(), d["channel"].as_str()),
        (Some(1), Some("healthy"), Some("stable")),
        "{d}"
    );
    assert_eq!((d["latest_release"].as_u64(), &d["pending"]), (Some(1), &serde_json::Value::Null), "{d}");
    assert_eq!(d["acked"].as_u64(), Some(sent.len() as u64), "{d}");
    assert_eq!(
        d["releases"],
        serde_json::json!([{"channel": "stable", "release": 1, "current": 1, "applied": 1, "healthy": 1, "rolled_back": 0,
            "failure_ratio": 0.0, "advice": null, "rollout": "100%"}])
    );
    let (stored, _) = ledger.check(&dev, &db, "imported from the stick");
    assert_eq!(stored, sent);

    // Back at the device, the acknowledgement on the stick empties the outbox.
    let r = run(agent(&dev, &["import"]).arg(&stick)).ok();
    assert!(r.stdout.contains(&format!("acknowledged through #{}", sent.len())), "{}", r.stdout);
    assert!(r.stdout.contains("up to date: release 1 is applied"), "{}", r.stdout);
    let left = outbox(&dev);
    assert!(left.keys().all(|s| !sent.contains_key(s)), "acknowledged records are gone: {left:?}");
    assert!(left.len() < sent.len());

    // The next release makes the same trip; its state reaches the fleet view.
    op.write(&[("app.conf", Some("setting = 2\n"))]);
    op.commit("second");
    op.release("stable", None, &[]).ok();
    export(&op);
    let r = run(agent(&dev, &["import"]).arg(&stick)).ok();
    assert!(r.stdout.contains("applied release 2"), "{}", r.stdout);
    let r = run(agent(&dev, &["export-reports"]).arg(&stick)).ok();
    assert!(r.stdout.contains("removed 1 acknowledged batch file(s)"), "{}", r.stdout);
    ledger.check(&dev, &db, "exported again");
    run(bundler(&["reports", "import"]).arg(&stick).arg("--db").arg(&db)).ok();
    let d = fleet_device(&db, Some(&op.mirror));
    assert_eq!(
        (d["release"].as_u64(), d["health"].as_str(), &d["pending"]),
        (Some(2), Some("healthy"), &serde_json::Value::Null),
        "{d}"
    );
    let r = run(agent(&dev, &["export-reports"]).arg(&stick)).ok();
    assert!(r.stdout.contains("nothing to export"), "{}", r.stdout);
    let (stored, pending) = ledger.check(&dev, &db, "round trip done");
    assert!(pending.is_empty());
    assert_eq!(stored.len() as u64, last_seq_made(&dev));
    assert_eq!(fs::read_dir(stick.join("reports").join(DEVICE)).expect("reports dir").count(), 0, "stick pruned");
}
