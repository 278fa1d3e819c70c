//! Tests of the fetch layer against real HTTP servers on 127.0.0.1: axum for well-behaved
//! and misbehaving mirrors (dropping, stalling, ignoring `Range`, changing validators), raw
//! TCP where a server must break HTTP itself. Shared here: the servers, an in-memory
//! [`ChunkSink`], and a fetcher that ignores the proxy environment.

mod documents;
mod downloads;
mod retries;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use url::Url;

use super::{ChunkSink, FetchConfig, FetchError, Fetcher, Resume, MAX_PIECE};
use crate::failure::Failure;

/// A fetcher with test timeouts, ignoring `HTTP_PROXY` and friends.
pub(super) fn fetcher(cfg: FetchConfig) -> Fetcher {
    Fetcher::build(&cfg, false).expect("fetcher")
}

/// Test defaults: short timeouts so a hang fails fast.
pub(super) fn cfg() -> FetchConfig {
    FetchConfig {
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
        ..FetchConfig::default()
    }
}

/// Serves `app` on an ephemeral port; returns its base URL.
pub(super) async fn serve(app: Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Url::parse(&format!("http://{addr}/")).expect("url")
}

/// Deterministic, non-repeating-looking payload bytes.
pub(super) fn payload(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// A [`ChunkSink`] in memory that insists on the sink contract.
#[derive(Debug, Default)]
pub(super) struct MemSink {
    pub data: Vec<u8>,
    pub validator: Option<String>,
    pub restarts: usize,
    pub writes: usize,
}

impl MemSink {
    pub fn resume(&self) -> Resume {
        Resume { start: 0, offset: self.data.len() as u64, validator: self.validator.clone() }
    }
}

impl ChunkSink for MemSink {
    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), FetchError> {
        if offset != self.data.len() as u64 || bytes.is_empty() || bytes.len() > MAX_PIECE {
            return Err(Failure::new(
                ferry_proto::Reason::Io,
                format!("bad write of {} bytes at {offset}, holding {}", bytes.len(), self.data.len()),
            )
            .into());
        }
        self.data.extend_from_slice(bytes);
        self.writes += 1;
        Ok(())
    }

    fn restart(&mut self) -> Result<(), FetchError> {
        self.data.clear();
        self.validator = None;
        self.restarts += 1;
        Ok(())
    }

    fn set_validator(&mut self, validator: Option<String>) -> Result<(), FetchError> {
        self.validator = validator;
        Ok(())
    }
}

/// How the payload server misbehaves.
#[derive(Debug, Default, Clone)]
pub(super) struct Behaviour {
    /// Abort each response's connection after this many body bytes.
    pub drop_every: Option<usize>,
    /// Only the first response drops.
    pub drop_first_only: bool,
    /// Always answer 200 with the whole file.
    pub ignore_range: bool,
    /// No Content-Length: chunked framing.
    pub chunked: bool,
    /// Send this many body bytes, then hang.
    pub stall_after: Option<usize>,
    /// Claim a range starting this many bytes later than the one sent.
    pub skew_content_range: u64,
    /// Send the body in pieces of this many bytes, one every this long.
    pub trickle: Option<(usize, Duration)>,
}

/// A mirror serving one payload file at any path, honouring `Range` and `If-Range` unless
/// told otherwise, and counting what it serves.
#[derive(Debug)]
pub(super) struct PayloadServer {
    pub data: Vec<u8>,
    pub etag: Mutex<String>,
    pub behaviour: Behaviour,
    pub served: AtomicU64,
    pub requests: AtomicU64,
    pub if_range_requests: AtomicU64,
}

impl PayloadServer {
    pub fn new(data: Vec<u8>, behaviour: Behaviour) -> Arc<PayloadServer> {
        Arc::new(PayloadServer {
            data,
            etag: Mutex::new("\"v1\"".into()),
            behaviour,
            served: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            if_range_requests: AtomicU64::new(0),
        })
    }

    /// Starts it; returns the payload URL.
    pub async fn start(self: &Arc<Self>) -> Url {
        let app = Router::new().fallback(serve_payload).with_state(self.clone());
        serve(app).await.join("payloads/p.ferry").expect("url")
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn set_etag(&self, etag: &str) {
        *self.etag.lock().expect("lock") = etag.into();
    }
}

async fn serve_payload(State(s): State<Arc<PayloadServer>>, headers: HeaderMap) -> Response {
    let nth = s.requests.fetch_add(1, Ordering::SeqCst);
    let etag = s.etag.lock().expect("lock").clone();
    let len = s.data.len();
    let b = &s.behaviour;
    let if_range = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok());
    if if_range.is_some() {
        s.if_range_requests.fetch_add(1, Ordering::SeqCst);
    }
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|_| !b.ignore_range && if_range.is_none_or(|v| v == etag))
        .filter(|&start| start < len);
    let drop_at = b.drop_every.filter(|_| !b.drop_first_only || nth == 0);
    let from = start.unwrap_or(0);
    let mut resp = Response::builder().header(header::ETAG, etag).header(header::ACCEPT_RANGES, "bytes");
    if let Some(start) = start {
        let claimed = start as u64 + b.skew_content_range;
        resp = resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {claimed}-{}/{len}", len - 1));
    }
    if !b.chunked {
        resp = resp.header(header::CONTENT_LENGTH, len - from);
    }
    let server = s.clone();
    let stall_after = b.stall_after;
    let trickle = b.trickle;
    let body = futures_util::stream::unfold((from, 0usize, false), move |(pos, sent, done)| {
        let s = server.clone();
        async move {
            if done {
                return None;
            }
            if drop_at.is_some_and(|d| sent >= d) && pos < s.data.len() {
                // Let hyper flush what it has, then abort the connection.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Some((Err(std::io::Error::other("dropped")), (pos, sent, true)));
            }
            if stall_after.is_some_and(|d| sent >= d) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return None;
            }
            if pos >= s.data.len() {
                return None;
            }
            let mut n = (16 * 1024).min(s.data.len() - pos);
            if let Some((piece, gap)) = trickle {
                tokio::time::sleep(gap).await;
                n = n.min(piece);
            }
            for limit in [drop_at, stall_after].into_iter().flatten() {
                n = n.min(limit - sent);
            }
            s.served.fetch_add(n as u64, Ordering::SeqCst);
            let piece = Bytes::copy_from_slice(&s.data[pos..pos + n]);
            Some((Ok(piece), (pos + n, sent + n, false)))
        }
    });
    resp.body(Body::from_stream(body)).expect("response")
}
