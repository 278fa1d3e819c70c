//! Status reports, device side, through the real `ferry-agent`: the device identity, batch
//! files on a USB stick that the device's public key verifies, acknowledgements that come
//! back on the stick, and uploads to a report server that acknowledges part, all, or
//! refuses.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ferry_proto::report::ReportBatch;
use ferry_proto::{Limits, PublicKey};
use ferry_tests::fixture::{Device, Operator};
use ferry_tests::{run, Run};

/// `ferry-agent identity --json`: (key id, public key).
fn identity(dev: &Device) -> (String, PublicKey) {
    let r = run(&mut dev.agent(&["identity", "--json"])).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("identity json");
    assert_eq!(v["device_id"], "test-device");
    let key = PublicKey::from_pem(v["public_key"].as_str().expect("pem")).expect("public key");
    assert_eq!(v["key_id"].as_str(), Some(key.id().to_hex().as_str()));
    (key.id().to_hex(), key)
}

fn db(dev: &Device) -> rusqlite::Connection {
    rusqlite::Connection::open(dev.state.join("ferry.db")).expect("db")
}

/// Adds `n` events straight into the outbox: every tenth a failure with a reason.
fn seed(dev: &Device, n: usize) {
    let conn = db(dev);
    for i in 0..n {
        let reason = (i % 10 == 9).then_some("health-failed");
        conn.execute(
            "INSERT INTO events(at, kind, release, reason, message) VALUES(1700000000, ?1, ?2, ?3, ?4)",
            rusqlite::params![
                if reason.is_some() { "rejected" } else { "fetched" },
                i as i64,
                reason,
                format!("event {i}")
            ],
        )
        .expect("insert");
    }
}

/// Sequence numbers in the outbox.
fn pending(dev: &Device) -> Vec<u64> {
    let conn = db(dev);
    let mut stmt = conn.prepare("SELECT seq FROM events ORDER BY seq").expect("prepare");
    let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).expect("query");
    rows.map(|r| r.expect("row") as u64).collect()
}

fn kinds(dev: &Device) -> Vec<String> {
    let conn = db(dev);
    let mut stmt = conn.prepare("SELECT DISTINCT kind FROM events ORDER BY kind").expect("prepare");
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// Decompresses and verifies a batch body with the device key.
fn open_batch(body: &[u8], key: &PublicKey) -> ReportBatch {
    let envelope = zstd::decode_all(body).expect("zstd");
    ReportBatch::verify(&envelope, key, &Limits::default()).expect("batch verifies with the device key")
}

/// The batch files on the stick, sorted by first sequence number.
fn batch_files(stick: &Path) -> Vec<PathBuf> {
    let dir = stick.join("reports").join("test-device");
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    let first = |p: &PathBuf| -> u64 {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.split('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    files.sort_by_key(first);
    files
}

fn write_ack(stick: &Path, device_id: &str, acked: u64) {
    fs::create_dir_all(stick.join("acks")).expect("mkdir");
    let json = format!("{{\"device_id\": \"{device_id}\", \"acked\": {acked}}}");
    fs::write(stick.join("acks").join("test-device.ack"), json).expect("ack file");
}

fn export(dev: &Device, stick: &Path) -> Run {
    run(dev.agent(&["export-reports"]).arg(stick)).ok()
}

#[test]
fn identity_is_made_once_and_exported_batches_verify_until_acknowledged() {
    let op = Operator::new();
    let dev = Device::new("stable", &op.root1(), "");

    let plain = run(&mut dev.agent(&["identity"])).ok();
    let (key_id, key) = identity(&dev);
    assert!(plain.stdout.contains(&key_id), "{}", plain.stdout);
    assert!(plain.stdout.contains("-----BEGIN PUBLIC KEY-----"), "{}", plain.stdout);
    assert!(!plain.all().contains("PRIVATE"), "the private key is never printed");
    assert_eq!(identity(&dev).0, key_id, "stable across runs");
    let mode = fs::metadata(dev.state.join("identity.key")).expect("key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    dev.status();
    seed(&dev, 1100);
    let stick = tempfile::tempdir().expect("stick");
    let r = export(&dev, stick.path());
    let files = batch_files(stick.path());
    let names: Vec<String> =
        files.iter().map(|p| p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string()).collect();
    assert_eq!(names, ["1-500.batch", "501-1000.batch", "1001-1100.batch"], "{}", r.stdout);
    assert_eq!(r.stdout.matches("wrote ").count(), 3, "{}", r.stdout);
    let mut next = 1;
    for f in &files {
        let batch = open_batch(&fs::read(f).expect("read"), &key);
        assert_eq!(batch.device_id, "test-device");
        assert_eq!(batch.status.channel, "stable");
        assert_eq!(batch.dropped, 0);
        for rec in &batch.records {
            assert_eq!(rec.seq, next);
            assert_eq!(rec.reason.is_some(), rec.seq % 10 == 0, "failures keep their reason");
            next += 1;
        }
    }
    assert_eq!(next, 1101);
    assert_eq!(pending(&dev).len(), 1100, "exported records stay until acknowledged");

    // An ack file for another device is ignored.
    write_ack(stick.path(), "another-device", 1100);
    let r = export(&dev, stick.path());
    assert!(r.stdout.contains("ignored"), "{}", r.stdout);
    assert_eq!(pending(&dev).len(), 1100);

    // `import` applies the ack file the operator's import left (then finds no release).
    write_ack(stick.path(), "test-device", 1000);
    let r = run(dev.agent(&["import"]).arg(stick.path()));
    assert!(r.stdout.contains("acknowledged through #1000"), "{}", r.all());
    assert_eq!(pending(&dev), (1001..=1100).collect::<Vec<_>>());
    let r = export(&dev, stick.path());
    assert!(r.stdout.contains("removed 2 acknowledged batch file(s)"), "{}", r.stdout);
    let files = batch_files(stick.path());
    assert_eq!(files.len(), 1);
    let batch = open_batch(&fs::read(&files[0]).expect("read"), &key);
    assert_eq!((batch.records[0].seq, batch.last_seq()), (1001, 1100));

    // The whole round trip acknowledged: nothing left, on the device or the stick.
    write_ack(stick.path(), "test-device", 1100);
    let r = export(&dev, stick.path());
    assert!(r.stdout.contains("nothing to export"), "{}", r.stdout);
    assert!(pending(&dev).is_empty());
    assert!(batch_files(stick.path()).is_empty());
    // The last failure is still what `status` shows.
    assert_eq!(dev.status()["last_error"]["reason"], "health-failed");
}

/// How the report server answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `200 {"acked": min(n, last)}`.
    AckUpTo(u64),
    /// `200 {"acked": last}`.
    AckAll,
    /// `401 {"error": "unknown device key"}`.
    Unauthorized,
}

#[derive(Debug)]
struct Server {
    mode: Mode,
    key: Option<PublicKey>,
    /// (first seq, last seq) of every batch received.
    received: Vec<(u64, u64)>,
}

async fn handle(State(s): State<Arc<Mutex<Server>>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let mut s = s.lock().expect("lock");
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("application/x-ferry-report-batch"));
    let key = s.key.expect("enrolled key");
    let batch = open_batch(&body, &key);
    s.received.push((batch.records[0].seq, batch.last_seq()));
    match s.mode {
        Mode::AckUpTo(n) => (StatusCode::OK, format!("{{\"acked\": {}}}", n.min(batch.last_seq()))),
        Mode::AckAll => (StatusCode::OK, format!("{{\"acked\": {}}}", batch.last_seq())),
        Mode::Unauthorized => (StatusCode::UNAUTHORIZED, "{\"error\": \"unknown device key\"}".into()),
    }
}

/// Serves the report endpoint on its own thread; returns the URL.
fn serve(state: Arc<Mutex<Server>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = Router::new().route("/v1/reports", post(handle)).with_state(state);
            let _ = axum::serve(listener, app).await;
        });
    });
    format!("http://{addr}/v1/reports")
}

fn run_once(dev: &Device) -> Run {
    let mut cmd = dev.agent(&["run", "--once"]);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    run(&mut cmd)
}

#[test]
fn uploads_remove_exactly_what_the_server_acknowledged() {
    let op = Operator::new();
    let state = Arc::new(Mutex::new(Server { mode: Mode::AckUpTo(4), key: None, received: Vec::new() }));
    let url = serve(state.clone());
    let dev = Device::new("stable", &op.root1(), &format!("[reports]\nurl = \"{url}\"\n"));
    let (_, key) = identity(&dev);
    state.lock().expect("lock").key = Some(key);
    dev.status();
    seed(&dev, 10);

    // 10 seeded + agent-start = 11. The server stores through 4 only: the rest is sent
    // once more in the same pass, acknowledged through 4 again (no progress), and kept.
    let r = run_once(&dev);
    assert_eq!(std::mem::take(&mut state.lock().expect("lock").received), [(1, 11), (5, 11)], "{}", r.all());
    assert_eq!(pending(&dev), (5..=11).collect::<Vec<_>>());

    // Next time the rest goes (with this run's agent-start, 12).
    state.lock().expect("lock").mode = Mode::AckAll;
    let r = run_once(&dev);
    assert_eq!(std::mem::take(&mut state.lock().expect("lock").received), [(5, 12)], "{}", r.all());
    assert!(pending(&dev).is_empty(), "{}", r.all());

    // A server that does not know the key: nothing is removed, and the failed upload is
    // logged, not recorded (no event feeds the outbox it cannot empty).
    state.lock().expect("lock").mode = Mode::Unauthorized;
    seed(&dev, 3);
    let r = run_once(&dev);
    assert_eq!(std::mem::take(&mut state.lock().expect("lock").received), [(13, 16)], "{}", r.all());
    assert_eq!(pending(&dev), (13..=16).collect::<Vec<_>>());
    assert_eq!(kinds(&dev), ["agent-start", "fetched"], "{}", r.all());
    assert!(r.stderr.contains("report upload stopped") && r.stderr.contains("401"), "{}", r.stderr);
}
