//! The operator's side of reports and the mirror server, through the real `bundler`
//! binary: `bundler serve` serving a mirror (validators, ranges, cache headers, traversal)
//! and taking signed report batches (each refusal staged by name), `bundler devices`,
//! `bundler reports import` from a USB-stick directory, `bundler fleet`, and a `kill -9`
//! in the middle of a large ingest.
//!
//! HTTP is spoken over raw `TcpStream`s (`Connection: close`), so every byte and header the
//! server sends is what the assertions see. Device keys and batches are made here with
//! `ferry_proto`, as a device would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_proto::report::{DeviceStatus, ReportBatch, ReportRecord, REPORT_FORMAT};
use ferry_proto::SigningKey;
use ferry_tests::fixture::Operator;
use ferry_tests::serve_process::ServeProcess;
use ferry_tests::{binaries, run, Run};

const BATCH_TYPE: &str = "application/x-ferry-report-batch";

/// A running `bundler serve`; killed (SIGKILL) and reaped on drop.
struct Server {
    process: ServeProcess,
    addr: SocketAddr,
}

impl Server {
    fn start(mirror: Option<&Path>, db: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(&binaries().bundler);
        cmd.arg("serve").arg("--db").arg(db).args(["--listen", "127.0.0.1:0"]).args(extra);
        if let Some(m) = mirror {
            cmd.arg("--mirror").arg(m);
        }
        cmd.env_remove("FERRY_LOG");
        let process = ServeProcess::spawn(&mut cmd);
        let addr = process.addr;
        Server { process, addr }
    }

    fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// SIGTERM, then the exit code (within 20 s).
    fn terminate(&mut self) -> i32 {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.process.child.id().to_string()])
            .status()
            .expect("kill -s TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.process.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "bundler serve did not stop on SIGTERM; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        self.process.kill();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends raw bytes, reads until the server closes, parses the answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s.write_all(request).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read answer");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(!headers.iter().any(|(k, _)| k == "transfer-encoding"), "chunked answer: {head}");
    Reply { status, headers, body: raw[end + 4..].to_vec() }
}

fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    exchange(addr, &bytes)
}

fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", target, headers, b"")
}

fn post(addr: SocketAddr, body: &[u8]) -> Reply {
    request(addr, "POST", "/v1/reports", &[("Content-Type", BATCH_TYPE)], body)
}

fn key() -> SigningKey {
    SigningKey::generate().expect("rng")
}

fn batch(device: &str, key: &SigningKey, seqs: RangeInclusive<u64>, release: Option<u64>) -> ReportBatch {
    ReportBatch {
        format: REPORT_FORMAT,
        device_id: device.into(),
        device_key: key.public(),
        created: 1_700_000_000,
        dropped: 0,
        status: DeviceStatus {
            channel: "stable".into(),
            labels: vec![("site".into(), "plant7".into())],
            release,
            commit: None,
            slot: release.map(|_| "a".into()),
            health: if release.is_some() { "healthy".into() } else { "none".into() },
            last_failure: None,
            drift_paths: 0,
            paused: false,
        },
        records: seqs
            .map(|seq| ReportRecord {
                seq,
                at: 1_700_000_000 + seq,
                kind: if release.is_some() { "applied".into() } else { "agent-start".into() },
                release,
                reason: None,
                message: format!("record {seq}"),
            })
            .collect(),
    }
}

/// What a device sends and exports: zstd of the signed envelope.
fn wire(batch: &ReportBatch, key: &SigningKey) -> Vec<u8> {
    zstd::encode_all(&batch.sign(key)[..], 3).expect("zstd")
}

fn bundler(args: &[&str]) -> Command {
    let mut c = Command::new(&binaries().bundler);
    c.args(args).env_remove("FERRY_LOG");
    c
}

/// `bundler devices enroll ID <public key file> --db DB`.
fn enroll(dir: &Path, db: &Path, id: &str, key: &SigningKey) -> Run {
    let pem = dir.join(format!("{id}.pub"));
    std::fs::write(&pem, key.public().to_pem()).expect("write key");
    run(bundler(&["devices", "enroll", id]).arg(&pem).arg("--db").arg(db))
}

fn fleet_json(db: &Path, mirror: Option<&Path>) -> serde_json::Value {
    let mut c = bundler(&["fleet", "--json", "--db"]);
    c.arg(db);
    if let Some(m) = mirror {
        c.arg("--mirror").arg(m);
    }
    serde_json::from_str(&run(&mut c).ok().stdout).expect("fleet json")
}

fn device<'a>(fleet: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    fleet["devices"].as_array().expect("devices").iter().find(|d| d["device_id"] == id).expect("device listed")
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(bytes)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("digest").to_string()
}

fn only_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("list").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

#[test]
fn mirror_is_served_read_only_with_validators_ranges_and_cache_headers() {
    let op = Operator::new();
    op.write(&[("app.conf", Some("setting = 1\n")), ("data.bin", Some(&"0123456789".repeat(5000)))]);
    op.commit("first");
    op.release("stable", None, &[]).ok();
    let db = op.dir.path().join("fleet.db");
    let server = Server::start(Some(&op.mirror), &db, &[]);
    let addr = server.addr;

    // Trust roots and the channel index: revalidated, strong ETag = quoted SHA-256.
    let root = std::fs::read(op.root1()).expect("root");
    let r = get(addr, "/trust/root.1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, root);
    let etag = format!("\"{}\"", sha256_hex(&root));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("content-length"), Some(root.len().to_string().as_str()));
    assert_eq!(get(addr, "/trust/root.1", &[("If-None-Match", &etag)]).status, 304);
    assert_eq!(get(addr, "/trust/root.1", &[("If-None-Match", "\"other\"")]).status, 200);
    let index = get(addr, "/channels/stable/index", &[]);
    assert_eq!((index.status, index.header("cache-control")), (200, Some("no-cache")));
    let head = request(addr, "HEAD", "/channels/stable/index", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), index.header("etag"));
    assert_eq!(head.header("content-length"), Some(index.body.len().to_string().as_str()));

    // Content-addressed files: immutable, ranges.
    let manifest = only_file(&op.mirror.join("releases"));
    let name = manifest.file_name().expect("name").to_string_lossy().into_owned();
    let r = get(addr, &format!("/releases/{name}"), &[]);
    assert_eq!((r.status, r.header("cache-control")), (200, Some("public, max-age=31536000, immutable")));
    let payload = op.latest_payloads("stable").remove("full").expect("full payload");
    let bytes = std::fs::read(&payload).expect("payload");
    let len = bytes.len();
    let target = format!("/payloads/{}", payload.file_name().expect("name").to_string_lossy());
    let full = get(addr, &target, &[]);
    assert_eq!(full.status, 200);
    assert_eq!(full.body, bytes);
    assert_eq!(full.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let tag = full.header("etag").expect("etag").to_string();
    assert_eq!(tag, format!("\"{}\"", sha256_hex(&bytes)));

    let r = get(addr, &target, &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &bytes[10..20]);
    assert_eq!(r.header("content-range"), Some(format!("bytes 10-19/{len}").as_str()));
    let r = get(addr, &target, &[("Range", "bytes=-7")]);
    assert_eq!((r.status, &r.body[..]), (206, &bytes[len - 7..]));
    let r = get(addr, &target, &[("Range", "bytes=100-"), ("If-Range", &tag)]);
    assert_eq!((r.status, &r.body[..]), (206, &bytes[100..]));
    let r = get(addr, &target, &[("Range", "bytes=100-"), ("If-Range", "\"a-previous-version\"")]);
    assert_eq!((r.status, r.body.len()), (200, len), "If-Range mismatch must send the whole file");
    let r = get(addr, &target, &[("Range", &format!("bytes={len}-"))]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()));
    let r = get(addr, &target, &[("Range", "bytes=0-1,5-6")]);
    assert_eq!((r.status, r.body.len()), (200, len), "several ranges: the whole file");
    assert_eq!(get(addr, &target, &[("If-None-Match", &tag), ("Range", "bytes=0-1")]).status, 304);

    // Nothing outside the layout, however spelled, and nothing written.
    std::fs::write(op.dir.path().join("secret"), b"operator secret").expect("secret");
    std::os::unix::fs::symlink(op.dir.path().join("secret"), op.mirror.join("trust/root.9")).expect("symlink");
    for target in [
        "/../secret",
        "/trust/../../secret",
        "/trust/root.9",
        "/trust/%2e%2e/%2e%2e/secret",
        "/payloads/..%2fsecret",
        "http://example.com/../secret",
        "/trust/",
        "/channels/stable",
        "/channels/stable/index/",
    ] {
        let r = get(addr, target, &[]);
        assert_eq!(r.status, 404, "{target}");
        assert!(!String::from_utf8_lossy(&r.body).contains("operator secret"), "{target}");
    }
    // `/` is the fleet dashboard, not a directory listing.
    let r = get(addr, "/", &[]);
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/html; charset=utf-8")));
    assert!(!String::from_utf8_lossy(&r.body).contains("operator secret"));
    assert_eq!(request(addr, "PUT", "/trust/root.2", &[], b"x").status, 405);
    assert_eq!(request(addr, "DELETE", "/trust/root.1", &[], b"").status, 405);
    assert_eq!(get(addr, "/v1/reports", &[]).status, 405);
    assert!(!op.mirror.join("trust/root.2").exists());
}

#[test]
fn report_batches_are_verified_against_enrolled_keys_and_acknowledged() {
    let op = Operator::new();
    op.write(&[("app.conf", Some("setting = 1\n"))]);
    op.commit("first");
    op.release("stable", None, &[]).ok();
    let dir = op.dir.path();
    let db = dir.join("fleet.db");
    let (k, other) = (key(), key());
    let r = enroll(dir, &db, "pump-1", &k).ok();
    assert!(r.stdout.contains(&format!("enrolled device pump-1 with key id {}", k.public().id())), "{}", r.stdout);
    enroll(dir, &db, "pump-1", &k).ok();
    let conflict = enroll(dir, &db, "pump-1", &other).code(1);
    assert!(conflict.stderr.contains("--replace"), "{}", conflict.stderr);
    let mut server = Server::start(Some(&op.mirror), &db, &[]);
    let addr = server.addr;

    let r = post(addr, &wire(&batch("pump-1", &k, 1..=3, None), &k));
    assert_eq!((r.status, r.json()), (200, serde_json::json!({ "acked": 3 })));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Replayed.
    let r = post(addr, &wire(&batch("pump-1", &k, 1..=3, None), &k));
    assert_eq!((r.status, r.json()), (409, serde_json::json!({ "error": "replay", "acked": 3 })));
    // Forged: names pump-1's key, signed by another.
    let forged = zstd::encode_all(&batch("pump-1", &k, 4..=4, None).sign(&other)[..], 3).expect("zstd");
    let r = post(addr, &forged);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().expect("error").starts_with("signature: "), "{:?}", r.json());
    // Tampered on the way: one byte of a message changed.
    let mut envelope = batch("pump-1", &k, 4..=4, None).sign(&k);
    let at = envelope.windows(8).position(|w| w == b"record 4").expect("message");
    envelope[at] = b'R';
    let r = post(addr, &zstd::encode_all(&envelope[..], 3).expect("zstd"));
    assert_eq!(r.status, 400, "{:?}", r.json());
    // Unenrolled device.
    let stranger = key();
    let r = post(addr, &wire(&batch("stranger", &stranger, 1..=1, None), &stranger));
    assert_eq!((r.status, r.json()), (403, serde_json::json!({ "error": "unenrolled device stranger" })));
    // An enrolled id with another key.
    let r = post(addr, &wire(&batch("pump-1", &other, 4..=4, None), &other));
    assert_eq!(r.status, 403, "{:?}", r.json());
    // Oversized: declared too large (answered before the body), sent too large (read and
    // dropped, so the client reads the 413), and a small body that expands too far.
    let r = exchange(
        addr,
        format!(
            "POST /v1/reports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {BATCH_TYPE}\r\nContent-Length: 100000000\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 413);
    let r = post(addr, &vec![7u8; (1 << 20) + 100]);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().expect("error").starts_with("size-exceeded"), "{:?}", r.json());
    let bomb = zstd::encode_all(&vec![0u8; 32 << 20][..], 19).expect("zstd");
    assert_eq!(post(addr, &bomb).status, 413);
    // Wrong media type.
    let r = request(addr, "POST", "/v1/reports", &[("Content-Type", "application/json")], b"{}");
    assert_eq!(r.status, 415);
    // Partly new: only 4..=5 are stored; the status moves on.
    let r = post(addr, &wire(&batch("pump-1", &k, 2..=5, None), &k));
    assert_eq!((r.status, r.json()), (200, serde_json::json!({ "acked": 5 })));

    // The fleet view, with the pending release from the verified channel index.
    let fleet = fleet_json(&db, Some(&op.mirror));
    let d = device(&fleet, "pump-1");
    assert_eq!((d["acked"].as_u64(), d["channel"].as_str()), (Some(5), Some("stable")));
    assert_eq!((d["latest_release"].as_u64(), d["pending"].as_u64()), (Some(1), Some(1)));
    assert!(d["last_seen"].as_u64().is_some());
    let text = run(bundler(&["fleet", "--db"]).arg(&db).arg("--mirror").arg(&op.mirror)).ok().stdout;
    let line = text.lines().find(|l| l.starts_with("pump-1")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("site=plant7") && line.contains("s ago") && line.contains("pending 1"), "{line}");
    let list = run(bundler(&["devices", "list", "--db"]).arg(&db)).ok().stdout;
    assert!(list.contains("pump-1") && list.contains("operator"), "{list}");
    assert!(!list.contains("stranger"), "{list}");

    // Every refusal was logged with the device and reason; SIGTERM stops cleanly.
    assert_eq!(server.terminate(), 0);
    let logs = server.stderr();
    for needle in [
        "unenrolled device stranger",
        "reason=\"signature\"",
        "reason=\"replay\"",
        "reason=\"key-mismatch\"",
        "reason=\"size-exceeded\"",
        "device=\"pump-1\"",
        "stopped",
    ] {
        assert!(logs.contains(needle), "{needle:?} not logged:\n{logs}");
    }
}

#[test]
fn first_use_enrolment_binds_the_first_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    let server = Server::start(None, &db, &["--enroll-on-first-use"]);
    let (k, other) = (key(), key());
    let r = post(server.addr, &wire(&batch("newcomer", &k, 1..=2, Some(3)), &k));
    assert_eq!((r.status, r.json()), (200, serde_json::json!({ "acked": 2 })));
    let r = post(server.addr, &wire(&batch("newcomer", &other, 3..=3, Some(3)), &other));
    assert_eq!(r.status, 403);
    // Without a mirror, mirror paths are simply absent.
    assert_eq!(get(server.addr, "/trust/root.1", &[]).status, 404);
    let list: serde_json::Value =
        serde_json::from_str(&run(bundler(&["devices", "list", "--json", "--db"]).arg(&db)).ok().stdout).expect("json");
    assert_eq!(list[0]["device_id"], "newcomer");
    assert_eq!(list[0]["enrolled_by"], "first-use");
    assert_eq!(list[0]["key_id"], k.public().id().to_hex());
    let fleet = fleet_json(&db, None);
    assert_eq!(
        fleet["releases"][0],
        serde_json::json!({
            "channel": "stable", "release": 3, "current": 1, "applied": 1, "healthy": 1, "rolled_back": 0,
            "failure_ratio": 0.0, "advice": null, "rollout": null
        })
    );
}

#[test]
fn usb_import_ingests_oldest_first_writes_acks_and_updates_the_fleet_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    let stick = dir.path().join("stick");
    let k = key();
    enroll(dir.path(), &db, "pump-2", &k).ok();
    let reports = stick.join("reports/pump-2");
    std::fs::create_dir_all(&reports).expect("mkdir");
    // Names as the agent writes them: `<first>-<last>.batch`, not in numeric order by name.
    std::fs::write(reports.join("1-9.batch"), wire(&batch("pump-2", &k, 1..=9, Some(1)), &k)).expect("write");
    std::fs::write(reports.join("10-12.batch"), wire(&batch("pump-2", &k, 10..=12, Some(2)), &k)).expect("write");
    let mut tampered = batch("pump-2", &k, 13..=13, Some(2)).sign(&k);
    let n = tampered.len();
    tampered[n - 1] ^= 1;
    std::fs::write(reports.join("13-13.batch"), zstd::encode_all(&tampered[..], 3).expect("zstd")).expect("write");
    let s = key();
    std::fs::create_dir_all(stick.join("reports/stranger")).expect("mkdir");
    std::fs::write(stick.join("reports/stranger/1-1.batch"), wire(&batch("stranger", &s, 1..=1, None), &s))
        .expect("write");

    let r = run(bundler(&["reports", "import"]).arg(&stick).arg("--db").arg(&db)).code(1);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("OK reports/pump-2/1-9.batch: device pump-2, 9 new records, acked 9"), "{}", r.stdout);
    assert!(lines[1].starts_with("OK reports/pump-2/10-12.batch:"), "{}", r.stdout);
    assert!(lines[2].starts_with("REJECTED reports/pump-2/13-13.batch: signature: "), "{}", r.stdout);
    assert!(
        lines[3].starts_with("REJECTED reports/stranger/1-1.batch: unenrolled: unenrolled device stranger"),
        "{}",
        r.stdout
    );
    let ack: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stick.join("acks/pump-2.ack")).expect("ack")).expect("json");
    assert_eq!(ack, serde_json::json!({ "device_id": "pump-2", "acked": 12 }));
    assert!(!stick.join("acks/stranger.ack").exists());
    let fleet = fleet_json(&db, None);
    let d = device(&fleet, "pump-2");
    assert_eq!((d["acked"].as_u64(), d["release"].as_u64(), d["batches"].as_u64()), (Some(12), Some(2), Some(2)));

    // The same stick again, the bad files gone: all replays, nothing new, success.
    std::fs::remove_file(reports.join("13-13.batch")).expect("rm");
    std::fs::remove_dir_all(stick.join("reports/stranger")).expect("rm");
    let r = run(bundler(&["reports", "import"]).arg(&stick).arg("--db").arg(&db)).ok();
    assert_eq!(r.stdout.matches("REJECTED").count(), 2, "{}", r.stdout);
    assert!(r.stdout.contains("replay"), "{}", r.stdout);
    let ack: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stick.join("acks/pump-2.ack")).expect("ack")).expect("json");
    assert_eq!(ack["acked"], 12);
    assert_eq!(device(&fleet_json(&db, None), "pump-2")["batches"].as_u64(), Some(2));
}

/// A batch near the envelope limit: many records, so the ingest takes a while.
fn big_batch(device: &str, key: &SigningKey, first: u64, count: u64) -> Vec<u8> {
    let mut b = batch(device, key, first..=first + count - 1, Some(1));
    for r in &mut b.records {
        r.message = format!("record {} {}", r.seq, "x".repeat(100));
    }
    wire(&b, key)
}

#[test]
fn kill_9_during_a_large_ingest_leaves_whole_batches_or_none() {
    const COUNT: u64 = 6000;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    let k = key();
    enroll(dir.path(), &db, "big", &k).ok();
    // How long one large ingest takes here (request to answer), to aim the kills.
    let took = {
        let server = Server::start(None, &db, &[]);
        let started = Instant::now();
        assert_eq!(post(server.addr, &big_batch("big", &k, 1, COUNT)).status, 200);
        started.elapsed()
    };
    let mut next = COUNT + 1;
    let (mut stored, mut lost) = (0, 0);
    // From before the body is read to well after the commit.
    let delays: Vec<Duration> = [0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5]
        .iter()
        .map(|f| took.mul_f64(*f))
        .chain([took * 5 + Duration::from_millis(200)])
        .collect();
    for delay in delays {
        let body = big_batch("big", &k, next, COUNT);
        let mut server = Server::start(None, &db, &[]);
        let mut request = format!(
            "POST /v1/reports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {BATCH_TYPE}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let started = Instant::now();
        let mut stream = TcpStream::connect(server.addr).expect("connect");
        stream.write_all(&request).expect("send");
        std::thread::sleep(delay.saturating_sub(started.elapsed()));
        server.kill9();
        drop(stream);

        let conn = rusqlite::Connection::open(&db).expect("open db");
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
        assert_eq!(check, "ok");
        let n: u64 = conn
            .query_row(
                "SELECT COUNT(*) FROM reports WHERE device_id = 'big' AND seq BETWEEN ?1 AND ?2",
                [next, next + COUNT - 1],
                |r| r.get(0),
            )
            .expect("count");
        let acked: u64 =
            conn.query_row("SELECT acked FROM devices WHERE device_id = 'big'", [], |r| r.get(0)).expect("acked");
        drop(conn);
        assert!(n == 0 || n == COUNT, "kill -9 after {delay:?} left {n} of {COUNT} records");
        if n == COUNT {
            assert_eq!(acked, next + COUNT - 1, "records stored but the device row not updated");
            stored += 1;
        } else {
            assert_eq!(acked, next - 1, "device row updated without its records");
            lost += 1;
            // The device never got an ack, so it sends the batch again.
            let server = Server::start(None, &db, &[]);
            let r = post(server.addr, &body);
            assert_eq!((r.status, r.json()["acked"].as_u64()), (200, Some(next + COUNT - 1)));
        }
        next += COUNT;
    }
    eprintln!(
        "one ingest took {took:?}; kill -9 during ingest: {stored} batches complete, {lost} absent and sent again"
    );
    assert!(lost >= 1 && stored >= 1, "the kills did not cover both outcomes ({stored} complete, {lost} absent)");
    let conn = rusqlite::Connection::open(&db).expect("open db");
    let total: u64 = conn.query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0)).expect("count");
    assert_eq!(total, next - 1);
}
