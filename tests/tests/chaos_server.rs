//! The chaos mirror itself, checked with a raw HTTP/1.1 client on `std::net::TcpStream`
//! (so no client library fixes anything up): correct answers (ETag, 304, ranges, If-Range,
//! 404), every fault as documented, its counters and log, run-time switches, shutdown, and
//! that a seed fixes the fault sequence. Every read has a timeout and every loop a bound.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_proto::Sha256Digest;
use ferry_tests::chaos::{ChaosServer, Fault, Schedule, Served, When, ENDLESS_SAFETY_CAP};

const PAYLOAD: &str = "payloads/p.ferry";
const INDEX: &str = "channels/stable/index";
const PAYLOAD_LEN: usize = 200_000;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A mirror directory: a 200 kB payload, two channel indexes, a trust root.
struct Mirror {
    dir: tempfile::TempDir,
}

impl Mirror {
    fn new() -> Mirror {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mirror { dir };
        m.write(PAYLOAD, &pseudo_random(PAYLOAD_LEN, 7));
        m.write(INDEX, b"stable index, release 1\n");
        m.write("channels/beta/index", b"beta index, release 9, a little longer\n");
        m.write("trust/root.1", b"root 1\n");
        m
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let p = self.dir.path().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, content).expect("write");
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.dir.path().join(rel)).expect("read")
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn etag(content: &[u8]) -> String {
    format!("\"{}\"", Sha256Digest::of(content).to_hex())
}

/// How a body read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// All `Content-Length` bytes arrived (or the response has no body).
    Complete,
    /// The server closed (FIN) first.
    Eof,
    /// The connection was reset.
    Reset,
    /// No byte within the read timeout.
    TimedOut,
    /// The client stopped at its own cap.
    Capped,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    end: End,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length").map(|v| v.parse().expect("numeric Content-Length"))
    }
}

/// A raw HTTP/1.1 client on one connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(server: &ChaosServer) -> Client {
        let stream = TcpStream::connect(server.addr()).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        Client { stream, buf: Vec::new() }
    }

    fn timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("timeout");
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) {
        let mut req = format!("{method} /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).expect("send request");
    }

    /// Reads more bytes into the buffer.
    fn fill(&mut self) -> Result<(), End> {
        let mut tmp = [0u8; 16 << 10];
        match self.stream.read(&mut tmp) {
            Ok(0) => Err(End::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(End::TimedOut),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Err(End::Reset),
            Err(e) => panic!("reading the response: {e}"),
        }
    }

    /// Status and headers.
    fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(self.buf.len() < 64 << 10, "response head too long");
            if let Err(end) = self.fill() {
                panic!("response head cut short: {end:?}");
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let text = String::from_utf8(head).expect("ASCII head");
        let mut lines = text.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        (status, headers)
    }

    /// Up to `want` body bytes (or until the connection ends when `None`), at most `cap`.
    fn body(&mut self, want: Option<usize>, cap: usize) -> (Vec<u8>, End) {
        let limit = want.unwrap_or(usize::MAX).min(cap);
        let end = loop {
            if self.buf.len() >= limit {
                break if want.is_some_and(|w| w <= cap) { End::Complete } else { End::Capped };
            }
            if let Err(end) = self.fill() {
                break end;
            }
        };
        let take = self.buf.len().min(limit);
        (self.buf.drain(..take).collect(), end)
    }

    /// A whole exchange; bodies without a length are read to the end, at most `cap` bytes.
    fn exchange(&mut self, method: &str, path: &str, headers: &[(&str, &str)], cap: usize) -> Reply {
        self.send(method, path, headers);
        let (status, headers) = self.head();
        let mut reply = Reply { status, headers, body: Vec::new(), end: End::Complete };
        if method == "HEAD" || status == 304 {
            return reply;
        }
        let (body, end) = self.body(reply.content_length(), cap);
        reply.body = body;
        reply.end = end;
        reply
    }
}

/// One request on a fresh connection.
fn get(server: &ChaosServer, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::connect(server).exchange("GET", path, headers, 8 << 20)
}

/// The last finished response, once the server is idle.
fn last(server: &ChaosServer) -> Served {
    assert!(server.wait_idle(Duration::from_secs(5)), "the server did not finish its responses");
    server.log().pop().expect("a logged response")
}

#[test]
fn plain_get_head_404_and_keep_alive() {
    let m = Mirror::new();
    let server = ChaosServer::start(m.path(), Schedule::clean());
    assert!(server.url().starts_with("http://127.0.0.1:") && server.url().ends_with('/'));
    let index = m.read(INDEX);

    let mut c = Client::connect(&server);
    let r = c.exchange("GET", INDEX, &[], 1 << 20);
    assert_eq!((r.status, r.end), (200, End::Complete));
    assert_eq!(r.body, index);
    assert_eq!(r.content_length(), Some(index.len()));
    assert_eq!(r.header("etag"), Some(etag(&index).as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    // Same connection: HEAD, then the payload, then a miss.
    let r = c.exchange("HEAD", PAYLOAD, &[], 0);
    assert_eq!((r.status, r.content_length()), (200, Some(PAYLOAD_LEN)));
    let r = c.exchange("GET", PAYLOAD, &[], 1 << 20);
    assert_eq!((r.status, r.end), (200, End::Complete));
    assert_eq!(r.body, m.read(PAYLOAD));
    let r = c.exchange("GET", "trust/root.2", &[], 1 << 20);
    assert_eq!((r.status, r.content_length()), (404, Some(0)));

    assert_eq!(get(&server, "../etc/passwd", &[]).status, 400);
    assert_eq!(server.bytes_served(), (index.len() + PAYLOAD_LEN) as u64);
    assert_eq!(server.requests(), 5);
}

#[test]
fn if_none_match_gives_304_unless_a_fault_shapes_the_body() {
    let m = Mirror::new();
    let server = ChaosServer::start(m.path(), Schedule::clean());
    let tag = etag(&m.read(INDEX));

    let r = get(&server, INDEX, &[("If-None-Match", &tag)]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(tag.as_str()));
    let r = get(&server, INDEX, &[("If-None-Match", "\"something-else\", W/\"other\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(get(&server, INDEX, &[("If-None-Match", "*")]).status, 304);

    // A body fault cannot be dodged by a conditional poll.
    server.set_schedule(Schedule::clean().always("channels/", Fault::IgnoreRange));
    let r = get(&server, INDEX, &[("If-None-Match", &tag)]);
    assert_eq!((r.status, r.body), (200, m.read(INDEX)));
}

#[test]
fn range_gives_206_with_content_range() {
    let m = Mirror::new();
    let server = ChaosServer::start(m.path(), Schedule::clean());
    let p = m.read(PAYLOAD);

    let r = get(&server, PAYLOAD, &[("Range", "bytes=100-")]);
    assert_eq!((r.status, r.end), (206, End::Complete));
    assert_eq!(r.header("content-range"), Some(format!("bytes 100-{}/{PAYLOAD_LEN}", PAYLOAD_LEN - 1).as_str()));
    assert_eq!(r.body, &p[100..]);

    let r = get(&server, PAYLOAD, &[("Range", "bytes=10-19")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &p[10..20]));
    assert_eq!(r.header("content-range"), Some(format!("bytes 10-19/{PAYLOAD_LEN}").as_str()));

    let r = get(&server, PAYLOAD, &[("Range", "bytes=-5")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &p[PAYLOAD_LEN - 5..]));

    let r = get(&server, PAYLOAD, &[("Range", "bytes=999999-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{PAYLOAD_LEN}").as_str()));

    assert_eq!(server.bytes_served_for("payloads/"), (PAYLOAD_LEN - 100 + 10 + 5) as u64);
}

#[test]
fn if_range_mismatch_gives_the_whole_file() {
    let m = Mirror::new();
    let server = ChaosServer::start(m.path(), Schedule::clean());
    let p = m.read(PAYLOAD);
    let tag = etag(&p);

    let r = get(&server, PAYLOAD, &[("Range", "bytes=1000-"), ("If-Range", &tag)]);
    assert_eq!((r.status, r.body.as_slice()), (206, &p[1000..]));
    for other in ["\"0000\"", "Wed, 21 Oct 2015 07:28:00 GMT", "W/\"weak\""] {
        let r = get(&server, PAYLOAD, &[("Range", "bytes=1000-"), ("If-Range", other)]);
        assert_eq!((r.status, r.body.len()), (200, PAYLOAD_LEN), "If-Range: {other}");
        assert_eq!(r.header("content-range"), None);
    }
}

#[test]
fn drop_after_resets_after_exactly_n_bytes_and_a_resume_makes_progress() {
    let m = Mirror::new();
    let n = 64 << 10;
    let server = ChaosServer::start(m.path(), Schedule::clean().always("payloads/", Fault::DropAfter(n as u64)));
    let p = m.read(PAYLOAD);
    let tag = etag(&p);

    let r = get(&server, PAYLOAD, &[]);
    assert_eq!((r.status, r.content_length()), (200, Some(PAYLOAD_LEN)));
    assert_eq!(r.body, &p[..n]);
    assert_eq!(r.end, End::Reset, "a dropped link resets");
    let served = last(&server);
    assert_eq!((served.fault, served.bytes), (Some(Fault::DropAfter(n as u64)), n as u64));
    assert_eq!(server.bytes_served_for("payloads/"), n as u64);

    // Resuming with Range + If-Range gains n bytes a time; the last piece is short and whole.
    let mut got = r.body;
    for _ in 0..8 {
        if got.len() == PAYLOAD_LEN {
            break;
        }
        let range = format!("bytes={}-", got.len());
        let r = get(&server, PAYLOAD, &[("Range", &range), ("If-Range", &tag)]);
        assert_eq!(r.status, 206);
        got.extend_from_slice(&r.body);
    }
    assert_eq!(got, p);
    assert!(server.wait_idle(Duration::from_secs(5)));
    assert_eq!(server.bytes_served_for("payloads/"), PAYLOAD_LEN as u64);
    assert_eq!(server.requests_for("payloads/"), 4);
    // Small files are not affected.
    assert_eq!(get(&server, INDEX, &[]).end, End::Complete);
}

#[test]
fn truncate_closes_under_the_full_length() {
    let m = Mirror::new();
    let server = ChaosServer::start(m.path(), Schedule::clean().always("payloads/", Fault::Truncate(1000)));
    let r = get(&server, PAYLOAD, &[]);
    assert_eq!((r.status, r.content_length(), r.end), (200, Some(PAYLOAD_LEN), End::Eof));
    assert_eq!(r.body, &m.read(PAYLOAD)[..1000]);
    assert_eq!(last(&server).bytes, 1000);
    assert_eq!(server.bytes_served(), 1000);
}

#[test]
fn wrong_content_length_is_off_by_delta_then_closes() {
    let m = Mirror::new();
    let index = m.read(INDEX);
    let server = ChaosServer::start(m.path(), Schedule::clean().always(INDEX, Fault::WrongContentLength(100)));
    let r = get(&server, INDEX, &[]);
    assert_eq!((r.content_length(), r.end), (Some(index.len() + 100), End::Eof));
    assert_eq!(r.body, index);

    server.set_schedule(Schedule::clean().always(INDEX, Fault::WrongContentLength(-5)));
    let mut c = Client::connect(&server);
    let r = c.exchange("GET", INDEX, &[], 1 << 20);
    assert_eq!((r.content_length(), r.end), (Some(index.len() - 5), End::Complete));
    // The 5 bytes the header did not announce follow, then the close.
    let (extra, end) = c.body(None, 1 << 20);
    assert_eq!((extra.as_slice(), end), (&index[index.len() - 5..], End::Eof));
    assert_eq!(last(&server).bytes, index.len() as u64);
}

#[test]
fn stall_sends_then_stops_without_closing_then_resumes() {
    let m = Mirror::new();
    let pause = Duration::from_millis(800);
    let server =
        ChaosServer::start(m.path(), Schedule::clean().always("payloads/", Fault::Stall { after: 1000, pause }));
    let start = Instant::now();
    let mut c = Client::connect(&server);
    c.send("GET", PAYLOAD, &[]);
    let (status, _) = c.head();
    assert_eq!(status, 200);
    c.timeout(Duration::from_millis(300));
    let (first, end) = c.body(Some(PAYLOAD_LEN), PAYLOAD_LEN);
    assert_eq!((first.len(), end), (1000, End::TimedOut));
    assert_eq!(server.in_flight(), 1, "the stalled response is still open");
    assert_eq!(server.bytes_served(), 1000);

    c.timeout(READ_TIMEOUT);
    let (rest, end) = c.body(Some(PAYLOAD_LEN - 1000), PAYLOAD_LEN);
    assert_eq!(end, End::Complete);
    assert!(start.elapsed() >= pause, "the pause was {:?}", start.elapsed());
    assert_eq!([first, rest].concat(), m.read(PAYLOAD));
    assert_eq!(last(&server).bytes, PAYLOAD_LEN as u64);
}

#[test]
fn trickle_paces_the_body_and_stops_when_the_client_leaves() {
    let m = Mirror::new();
    m.write("channels/slow/index", &[b'x'; 40]);
    let server =
        ChaosServer::start(m.path(), Schedule::clean().always("channels/", Fault::Trickle { bytes_per_sec: 40 }));
    let start = Instant::now();
    let r = get(&server, "channels/slow/index", &[]);
    let took = start.elapsed();
    assert_eq!((r.status, r.body.as_slice(), r.end), (200, &[b'x'; 40][..], End::Complete));
    assert!(took >= Duration::from_millis(850) && took < Duration::from_secs(4), "40 bytes at 40 B/s took {took:?}");

    // 1 byte/s: read a byte or two, hang up; the server notices within its next pause.
    server.set_schedule(Schedule::clean().always("channels/", Fault::Trickle { bytes_per_sec: 1 }));
    let mut c = Client::connect(&server);
    c.send("GET", INDEX, &[]);
    let _ = c.head();
    let (one, _) = c.body(Some(1), 1);
    assert_eq!(one.len(), 1);
    drop(c);
    let served = last(&server);
    assert!(served.client_gone && served.bytes <= 3, "{served:?}");
}

#[test]
fn endless_sends_past_any_cap_and_stops_when_the_client_leaves() {
    let m = Mirror::new();
    let server = ChaosServer::start(m.path(), Schedule::clean().always("*", Fault::Endless));
    let index = m.read(INDEX);
    // The index repeated; for a file that does not exist, filler bytes.
    for (path, unit) in [(INDEX, Some(index.as_slice())), ("trust/root.9", None)] {
        let start = Instant::now();
        let mut c = Client::connect(&server);
        let r = c.exchange("GET", path, &[], 4 << 20);
        assert_eq!((r.status, r.end, r.content_length()), (200, End::Capped, None));
        match unit {
            Some(unit) => assert!(r.body.starts_with(unit) && r.body[unit.len()..].starts_with(unit)),
            None => assert!(r.body.starts_with(b"ferry-chaos")),
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        drop(c);
        let served = last(&server);
        assert!(served.client_gone, "{served:?}");
        assert!(served.bytes >= 4 << 20 && served.bytes < ENDLESS_SAFETY_CAP, "{served:?}");
    }
    assert!(server.bytes_served_for("channels/") >= 4 << 20);
}

#[test]
fn status_faults_carry_retry_after_and_keep_the_connection() {
    let m = Mirror::new();
    let schedule = Schedule::seeded(0).rule(
        "channels/",
        When::First(3),
        &[Fault::status(500), Fault::retry_after(503, 7), Fault::retry_after(429, 1)],
    );
    let server = ChaosServer::start(m.path(), schedule);
    let mut c = Client::connect(&server);
    for (code, retry) in [(500, None), (503, Some("7")), (429, Some("1"))] {
        let r = c.exchange("GET", INDEX, &[], 1 << 20);
        assert_eq!((r.status, r.header("retry-after"), r.body.len()), (code, retry, 0));
    }
    let r = c.exchange("GET", INDEX, &[], 1 << 20);
    assert_eq!((r.status, r.body), (200, m.read(INDEX)));
    assert!(server.wait_idle(Duration::from_secs(5)));
    let statuses: Vec<u16> = server.log().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [500, 503, 429, 200]);
}

#[test]
fn different_body_serves_other_bytes_under_the_same_url() {
    let m = Mirror::new();
    let p = m.read(PAYLOAD);
    let flipped = Fault::DifferentBody { from: None, same_etag: true };
    // The first download is clean; the resume gets inverted bytes under the same ETag.
    let server = ChaosServer::start(m.path(), Schedule::clean().requests("payloads/", &[1], flipped));
    let first = get(&server, PAYLOAD, &[("Range", "bytes=0-999")]);
    let tag = first.header("etag").expect("etag").to_string();
    let resume = get(&server, PAYLOAD, &[("Range", "bytes=1000-"), ("If-Range", &tag)]);
    assert_eq!((resume.status, resume.header("etag")), (206, Some(tag.as_str())));
    let inverted: Vec<u8> = p[1000..].iter().map(|b| !b).collect();
    assert_eq!(resume.body, inverted);

    // Another file's content, with its own ETag; works for a file that does not exist.
    let beta = m.read("channels/beta/index");
    let other = Fault::DifferentBody { from: Some("channels/beta/index".into()), same_etag: false };
    server.set_schedule(Schedule::clean().always("channels/stable/", other.clone()).always("trust/", other));
    for path in [INDEX, "channels/stable/missing", "trust/root.2"] {
        let r = get(&server, path, &[]);
        assert_eq!((r.status, &r.body), (200, &beta), "{path}");
        assert_eq!(r.header("etag"), Some(etag(&beta).as_str()));
    }
}

#[test]
fn ignore_range_answers_200_with_the_whole_body() {
    let m = Mirror::new();
    let server = ChaosServer::start(m.path(), Schedule::clean().always("payloads/", Fault::IgnoreRange));
    let r = get(&server, PAYLOAD, &[("Range", "bytes=100-"), ("If-Range", &etag(&m.read(PAYLOAD)))]);
    assert_eq!((r.status, r.header("content-range"), &r.body), (200, None, &m.read(PAYLOAD)));
}

#[test]
fn the_same_seed_gives_the_same_faults() {
    let m = Mirror::new();
    let faults = [Fault::status(500), Fault::retry_after(503, 2), Fault::IgnoreRange, Fault::Truncate(100)];
    let schedule = |seed| Schedule::seeded(seed).random("payloads/", 0.5, &faults);
    // Payload requests interleaved with index polls the rule does not see.
    let paths: Vec<&str> = (0..48).map(|i| if i % 3 == 2 { INDEX } else { PAYLOAD }).collect();
    let run = |seed| {
        let server = ChaosServer::start(m.path(), schedule(seed));
        for path in &paths {
            get(&server, path, &[]);
        }
        assert!(server.wait_idle(Duration::from_secs(5)));
        server.log().into_iter().map(|s| s.fault).collect::<Vec<_>>()
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_eq!(a, schedule(42).preview(paths.iter().copied()));
    assert_ne!(a, run(43));
    let fired = a.iter().filter(|f| f.is_some()).count();
    assert!(fired > 4 && fired < 28, "{a:?}");
    for fault in &faults {
        assert!(a.contains(&Some(fault.clone())), "{fault:?} never chosen in {a:?}");
    }
}

#[test]
fn schedule_and_directory_switch_at_run_time_and_counters_follow() {
    let old = Mirror::new();
    let new = Mirror::new();
    new.write(INDEX, b"stable index, release 2, frozen no more\n");
    let server = ChaosServer::start(old.path(), Schedule::clean());
    assert_eq!(get(&server, INDEX, &[]).body, old.read(INDEX));
    server.set_dir(new.path());
    assert_eq!(server.dir(), new.path());
    assert_eq!(get(&server, INDEX, &[]).body, new.read(INDEX));
    server.set_schedule(Schedule::clean().always("channels/*/index", Fault::status(503)));
    assert_eq!(get(&server, INDEX, &[]).status, 503);
    assert_eq!(get(&server, PAYLOAD, &[("Range", "bytes=0-99")]).status, 206);
    server.set_schedule(Schedule::clean());
    assert_eq!(get(&server, INDEX, &[]).status, 200);

    assert!(server.wait_idle(Duration::from_secs(5)));
    let index_bytes = (old.read(INDEX).len() + 2 * new.read(INDEX).len()) as u64;
    assert_eq!(server.bytes_served_for("channels/"), index_bytes);
    assert_eq!(server.bytes_served_for("payloads/"), 100);
    assert_eq!(server.bytes_served(), index_bytes + 100);
    assert_eq!((server.requests_for(INDEX), server.requests_for("payloads/")), (4, 1));
    assert_eq!(server.requests_by_path().get(INDEX), Some(&4));
    server.reset_counters();
    assert_eq!((server.bytes_served(), server.requests(), server.log().len()), (0, 0, 0));
}

#[test]
fn dropping_the_server_cuts_open_connections() {
    let m = Mirror::new();
    let stall = Fault::Stall { after: 10, pause: Duration::from_secs(60) };
    let server = ChaosServer::start(m.path(), Schedule::clean().always("payloads/", stall));
    let mut c = Client::connect(&server);
    c.send("GET", PAYLOAD, &[]);
    let _ = c.head();
    assert_eq!(c.body(Some(10), 10).0.len(), 10);
    let start = Instant::now();
    drop(server);
    assert!(start.elapsed() < Duration::from_secs(3), "shutdown took {:?}", start.elapsed());
    let (_, end) = c.body(None, PAYLOAD_LEN);
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
}
