//! The chaos mirror's HTTP/1.1, written by hand on tokio sockets so that every byte, pause
//! and close is under the fault's control (a library server would fix up lengths and
//! flush and close on its own terms). Only what mirrors need: `GET`/`HEAD`, no request
//! bodies, keep-alive, conditional and range requests.

use std::io;
use std::net::TcpListener as StdListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::Sha256Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout, Instant};

use super::{read_file, Fault, Served, Shared, ENDLESS_SAFETY_CAP};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Body bytes per socket write (and per counter update).
const WRITE_CHUNK: usize = 16 << 10;
/// How long an orderly close waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);

/// Accepts connections until `stop` fires (or its sender is dropped).
pub(super) async fn accept_loop(listener: StdListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => panic!("chaos mirror: registering the listener: {e}"),
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(Arc::clone(&shared), stream));
                }
                // Out of descriptors or an aborted handshake: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// How a response leaves the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    KeepAlive,
    /// Orderly close (FIN).
    Close,
    /// Abortive close (RST).
    Reset,
}

async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let mut conn = Conn { stream, buf: Vec::new() };
    loop {
        let head = match conn.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) | Err(_) => return,
        };
        let after = match Request::parse(&head) {
            Some(req) => {
                shared.in_flight.fetch_add(1, Ordering::SeqCst);
                let _guard = InFlight(&shared);
                let after = respond(&shared, &mut conn, &req).await;
                if req.close && after == After::KeepAlive {
                    After::Close
                } else {
                    after
                }
            }
            None => {
                let _ =
                    conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                After::Close
            }
        };
        match after {
            After::KeepAlive => continue,
            After::Close => return conn.close().await,
            After::Reset => {
                // A link that drops after n bytes delivered them: give a reading client a
                // moment to take what is queued before the reset discards the rest.
                tokio::time::sleep(DROP_GRACE).await;
                return conn.reset();
            }
        }
    }
}

/// Decrements the in-flight count however the response ends (the runtime may drop it).
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A parsed request head.
struct Request {
    method: String,
    /// Relative to the mirror; `None` when the target is not a plain mirror path.
    path: Option<String>,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    /// The client asked to close after this response (or speaks HTTP/1.0).
    close: bool,
}

impl Request {
    fn parse(head: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let mut parts = lines.next()?.split(' ');
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !version.starts_with("HTTP/1.") {
            return None;
        }
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut req = Request { method: method.to_string(), path: mirror_path(target), headers, close: false };
        let connection = req.header("connection").map(str::to_ascii_lowercase).unwrap_or_default();
        req.close = connection.contains("close") || (version == "HTTP/1.0" && !connection.contains("keep-alive"));
        Some(req)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `/payloads/ab.ferry?x` → `payloads/ab.ferry`; `None` for anything that is not a plain
/// relative path (`..`, `.`, empty segments, escapes, backslashes).
///
/// An absolute-form target (`http://host/payloads/…`, as a client talking to an HTTP proxy
/// sends) is served as its path, so the server doubles as a forward proxy for one mirror.
fn mirror_path(target: &str) -> Option<String> {
    let target = match target.strip_prefix("http://") {
        Some(rest) => &rest[rest.find('/')?..],
        None => target,
    };
    let path = target.split(['?', '#']).next()?.strip_prefix('/')?;
    let plain = !path.is_empty()
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !path.contains(['%', '\\', '\0']);
    plain.then(|| path.to_string())
}

/// What the Range header asks for, against a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Span {
    Whole,
    /// Inclusive byte positions.
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses one `bytes=` range; anything else (several ranges, other units, nonsense) is the
/// whole body, as RFC 9110 allows a server to do.
fn span(range: Option<&str>, len: u64) -> Span {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else { return Span::Whole };
    if spec.contains(',') {
        return Span::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else { return Span::Whole };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => Span::Unsatisfiable,
            Ok(_) if len == 0 => Span::Unsatisfiable,
            Ok(n) => Span::Part(len.saturating_sub(n), len - 1),
            Err(_) => Span::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else { return Span::Whole };
    let end = match last {
        "" => None,
        l => match l.parse::<u64>() {
            Ok(e) if e >= start => Some(e),
            _ => return Span::Whole,
        },
    };
    if start >= len {
        return Span::Unsatisfiable;
    }
    Span::Part(start, end.map_or(len - 1, |e| e.min(len - 1)))
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison).
fn none_match(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn etag_of(content: &[u8]) -> String {
    format!("\"{}\"", Sha256Digest::of(content).to_hex())
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Chaos",
    }
}

/// A response head under construction.
struct Head {
    code: u16,
    lines: String,
}

impl Head {
    fn new(code: u16) -> Head {
        Head { code, lines: String::new() }
    }

    fn with(mut self, name: &str, value: impl std::fmt::Display) -> Head {
        self.lines.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        format!("HTTP/1.1 {} {}\r\nServer: ferry-chaos\r\n{}\r\n", self.code, reason(self.code), self.lines)
            .into_bytes()
    }
}

/// One response being written, with what it sent so far.
struct Reply<'a> {
    shared: &'a Shared,
    conn: &'a mut Conn,
    path: String,
    status: u16,
    bytes: u64,
    gone: bool,
}

impl Reply<'_> {
    async fn head(&mut self, head: Head) -> bool {
        self.status = head.code;
        let ok = self.conn.write_all(&head.bytes()).await.is_ok();
        self.gone |= !ok;
        ok
    }

    /// Writes body bytes, counting each chunk once written; false once the client is gone.
    async fn body(&mut self, data: &[u8]) -> bool {
        for chunk in data.chunks(WRITE_CHUNK) {
            if self.conn.write_all(chunk).await.is_err() {
                self.gone = true;
                return false;
            }
            self.bytes += chunk.len() as u64;
            self.shared.add_bytes(&self.path, chunk.len() as u64);
        }
        true
    }

    /// Sends nothing for `dur`; false if the client left meanwhile.
    async fn pause(&mut self, dur: Duration) -> bool {
        let stayed = self.conn.pause(dur).await;
        self.gone |= !stayed;
        stayed
    }
}

async fn respond(shared: &Shared, conn: &mut Conn, req: &Request) -> After {
    let path = req.path.clone().unwrap_or_else(|| "<bad path>".to_string());
    let (dir, fault) = shared.begin(&path);
    let mut reply = Reply { shared, conn, path, status: 0, bytes: 0, gone: false };
    let after = match (req.path.is_some(), req.method.as_str()) {
        (false, _) => bare(&mut reply, Head::new(400), After::Close).await,
        (true, "GET" | "HEAD") => answer(&mut reply, &dir, req, fault.as_ref()).await,
        (true, _) => bare(&mut reply, Head::new(405).with("Allow", "GET, HEAD"), After::Close).await,
    };
    let Reply { path, status, bytes, gone, .. } = reply;
    shared.finish(Served { method: req.method.clone(), path, status, fault, bytes, client_gone: gone });
    after
}

/// A body-less answer.
async fn bare(reply: &mut Reply<'_>, head: Head, after: After) -> After {
    let close = if after == After::KeepAlive { head } else { head.with("Connection", "close") };
    if reply.head(close.with("Content-Length", 0)).await {
        after
    } else {
        After::Close
    }
}

async fn answer(reply: &mut Reply<'_>, dir: &std::path::Path, req: &Request, fault: Option<&Fault>) -> After {
    let is_head = req.method == "HEAD";
    if let Some(Fault::Status { code, retry_after }) = fault {
        let head = Head::new(*code);
        let head = match retry_after {
            Some(secs) => head.with("Retry-After", secs),
            None => head,
        };
        return bare(reply, head, After::KeepAlive).await;
    }
    let path = reply.path.clone();
    let real = read_file(dir, &path).await;
    let (content, etag) = match fault {
        Some(Fault::Endless) => return endless(reply, real, is_head).await,
        Some(Fault::DifferentBody { from, same_etag }) => {
            let other = match from {
                Some(from) => read_file(dir, from).await,
                None => real.as_ref().map(|r| r.iter().map(|b| !b).collect()),
            };
            let Some(other) = other else { return bare(reply, Head::new(404), After::KeepAlive).await };
            let etag = match (&real, same_etag) {
                (Some(real), true) => etag_of(real),
                _ => etag_of(&other),
            };
            (other, etag)
        }
        _ => match real {
            Some(real) => {
                let etag = etag_of(&real);
                (real, etag)
            }
            None => return bare(reply, Head::new(404), After::KeepAlive).await,
        },
    };

    // Conditional and range requests, unless the fault overrides them.
    let shapes_body = fault.is_some_and(Fault::shapes_body);
    if !shapes_body && req.header("if-none-match").is_some_and(|h| none_match(h, &etag)) {
        return bare_not_modified(reply, &etag).await;
    }
    let len = content.len() as u64;
    let range = match (fault, req.header("if-range")) {
        (Some(Fault::IgnoreRange), _) => None,
        (_, Some(if_range)) if if_range != etag => None,
        _ => req.header("range"),
    };
    let (code, start, end) = match span(range, len) {
        Span::Whole => (200, 0, len),
        Span::Part(first, last) => (206, first, last + 1),
        Span::Unsatisfiable => {
            let head = Head::new(416).with("Content-Range", format!("bytes */{len}"));
            return bare(reply, head, After::KeepAlive).await;
        }
    };
    let (start, end) = (usize::try_from(start).unwrap_or(usize::MAX), usize::try_from(end).unwrap_or(usize::MAX));
    let body = content.get(start..end).unwrap_or_default();
    let advertised = match fault {
        Some(Fault::WrongContentLength(delta)) => (body.len() as i64).saturating_add(*delta).max(0) as u64,
        _ => body.len() as u64,
    };
    let mut head = Head::new(code)
        .with("ETag", &etag)
        .with("Accept-Ranges", "bytes")
        .with("Content-Type", "application/octet-stream")
        .with("Content-Length", advertised);
    if code == 206 {
        head = head.with("Content-Range", format!("bytes {start}-{}/{len}", end - 1));
    }
    if !reply.head(head).await {
        return After::Close;
    }
    if is_head {
        return After::KeepAlive;
    }
    send_shaped(reply, body, fault).await
}

async fn bare_not_modified(reply: &mut Reply<'_>, etag: &str) -> After {
    if reply.head(Head::new(304).with("ETag", etag)).await {
        After::KeepAlive
    } else {
        After::Close
    }
}

/// How long a `DropAfter` reset waits for the client to read what was sent.
const DROP_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Sends `body` as the fault shapes it.
async fn send_shaped(reply: &mut Reply<'_>, body: &[u8], fault: Option<&Fault>) -> After {
    let cut = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).min(body.len());
    let sent = match fault {
        Some(Fault::DropAfter(n)) if cut(*n) < body.len() => {
            return if reply.body(&body[..cut(*n)]).await { After::Reset } else { After::Close };
        }
        Some(Fault::Truncate(n)) if cut(*n) < body.len() => {
            reply.body(&body[..cut(*n)]).await;
            return After::Close;
        }
        Some(Fault::WrongContentLength(_)) => {
            reply.body(body).await;
            return After::Close;
        }
        Some(Fault::Stall { after, pause }) => {
            let (first, rest) = body.split_at(cut(*after));
            reply.body(first).await && reply.pause(*pause).await && reply.body(rest).await
        }
        Some(Fault::Trickle { bytes_per_sec }) => trickle(reply, body, *bytes_per_sec).await,
        _ => reply.body(body).await,
    };
    if sent {
        After::KeepAlive
    } else {
        After::Close
    }
}

/// Sends `body` at `rate` bytes per second, in writes of a tenth of a second's worth.
async fn trickle(reply: &mut Reply<'_>, body: &[u8], rate: u64) -> bool {
    let rate = rate.max(1);
    let step = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);
    let start = Instant::now();
    let mut sent: u64 = 0;
    for chunk in body.chunks(step) {
        let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() && !reply.pause(wait).await {
            return false;
        }
        if !reply.body(chunk).await {
            return false;
        }
        sent += chunk.len() as u64;
    }
    true
}

/// 200 with no length and the content repeated until the client leaves.
async fn endless(reply: &mut Reply<'_>, real: Option<Vec<u8>>, is_head: bool) -> After {
    let seed = real.filter(|r| !r.is_empty()).unwrap_or_else(|| b"ferry-chaos endless body\n".to_vec());
    let head = Head::new(200)
        .with("ETag", etag_of(&seed))
        .with("Content-Type", "application/octet-stream")
        .with("Connection", "close");
    if !reply.head(head).await || is_head {
        return After::Close;
    }
    let mut block = Vec::with_capacity(WRITE_CHUNK + seed.len());
    while block.len() < WRITE_CHUNK {
        block.extend_from_slice(&seed);
    }
    while reply.bytes < ENDLESS_SAFETY_CAP {
        if !reply.body(&block).await {
            break;
        }
    }
    After::Close
}

/// A connection with the bytes read past the last request head.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// The next request head (through the blank line), `None` at a clean end of stream.
    async fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = self.buf.split_off(end + 4);
                let head = std::mem::replace(&mut self.buf, rest);
                return Ok(Some(head));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
            }
            let mut tmp = [0u8; 4096];
            match self.stream.read(&mut tmp).await? {
                0 if self.buf.is_empty() => return Ok(None),
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Waits `dur` without sending; false as soon as the client closes or errors. Bytes
    /// the client sends meanwhile are kept for the next request.
    async fn pause(&mut self, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        let mut tmp = [0u8; 4096];
        loop {
            if self.buf.len() > MAX_HEAD {
                sleep_until(deadline).await;
                return true;
            }
            tokio::select! {
                _ = sleep_until(deadline) => return true,
                read = self.stream.read(&mut tmp) => match read {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                },
            }
        }
    }

    /// Orderly close: FIN after all data, then wait (bounded) for the client's FIN, so
    /// that unread input does not turn the close into a reset.
    async fn close(mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let mut tmp = [0u8; 4096];
        let _ = timeout(LINGER, async {
            while let Ok(n) = self.stream.read(&mut tmp).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Abortive close: RST.
    fn reset(self) {
        let _ = self.stream.set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(span(None, 10), Span::Whole);
        assert_eq!(span(Some("bytes=2-"), 10), Span::Part(2, 9));
        assert_eq!(span(Some("bytes=2-4"), 10), Span::Part(2, 4));
        assert_eq!(span(Some("bytes=2-400"), 10), Span::Part(2, 9));
        assert_eq!(span(Some("bytes=-3"), 10), Span::Part(7, 9));
        assert_eq!(span(Some("bytes=-30"), 10), Span::Part(0, 9));
        assert_eq!(span(Some("bytes=10-"), 10), Span::Unsatisfiable);
        assert_eq!(span(Some("bytes=0-"), 0), Span::Unsatisfiable);
        assert_eq!(span(Some("bytes=4-2"), 10), Span::Whole);
        assert_eq!(span(Some("bytes=0-1,3-4"), 10), Span::Whole);
        assert_eq!(span(Some("items=0-1"), 10), Span::Whole);
    }

    #[test]
    fn paths() {
        assert_eq!(mirror_path("/payloads/ab.ferry?x=1").as_deref(), Some("payloads/ab.ferry"));
        assert_eq!(mirror_path("/channels/stable/index").as_deref(), Some("channels/stable/index"));
        for bad in ["/", "", "/../etc/passwd", "/a//b", "/a/./b", "/a%2e%2e/b", "relative", "/a\\b"] {
            assert_eq!(mirror_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn if_none_match() {
        assert!(none_match("\"a\", W/\"b\"", "\"b\""));
        assert!(none_match("*", "\"b\""));
        assert!(!none_match("\"a\"", "\"b\""));
    }
}
