//! `POST /v1/reports`: a device uploads one batch, `Content-Type:
//! application/x-ferry-report-batch`, body = zstd(signed envelope), at most 1 MiB.
//!
//! | status | body | meaning |
//! |---|---|---|
//! | 200 | `{"acked": N}` | stored; delete records up to N |
//! | 400 | `{"error": "<reason>: <message>"}` | malformed, bad signature, … (do not retry as is) |
//! | 403 | `{"error": "unenrolled device <id>"}` or another key | enroll the device |
//! | 409 | `{"error": "replay", "acked": N}` | nothing new; delete records up to N |
//! | 413 | `{"error": "size-exceeded: …"}` | split the batch |
//! | 415 | `{"error": "unsupported-media-type: …"}` | wrong `Content-Type` |
//! | 500 | `{"error": "io: …"}` | server trouble; retry later |
//!
//! The size cap is checked on `Content-Length` before reading and again while reading. An
//! oversized body up to [`DISCARD_LIMIT`] is read and discarded before the 413 is sent, so
//! a client still writing it reads the 413 rather than a connection reset (and can split
//! the batch); beyond that the connection is closed.

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{json_response, AppState};
use crate::ingest::{ingest, IngestError, MAX_COMPRESSED};

/// The media type of a report batch upload.
pub const CONTENT_TYPE: &str = "application/x-ferry-report-batch";

/// Oversized bodies up to this many bytes are read (and dropped) before answering 413.
const DISCARD_LIMIT: u64 = 8 << 20;

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// Reads at most [`MAX_COMPRESSED`] bytes; a longer body is drained up to
/// [`DISCARD_LIMIT`] and refused.
async fn read_body(body: Body) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        seen += chunk.len() as u64;
        if seen > DISCARD_LIMIT {
            return Err(BodyError::TooLarge);
        }
        if seen <= MAX_COMPRESSED as u64 {
            bytes.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_COMPRESSED as u64 {
        return Err(BodyError::TooLarge);
    }
    Ok(bytes)
}

/// Handles `POST /v1/reports`.
pub async fn post(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media_type.is_some_and(|m| m.eq_ignore_ascii_case(CONTENT_TYPE)) {
        tracing::warn!(%peer, reason = "unsupported-media-type", "report batch refused: Content-Type {media_type:?}");
        return json_response(
            415,
            json!({ "error": format!("unsupported-media-type: send Content-Type: {CONTENT_TYPE}") }),
        );
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DISCARD_LIMIT) {
        return too_large(peer);
    }
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(peer),
        Err(BodyError::Read(e)) => {
            tracing::warn!(%peer, reason = "malformed", "report batch refused: reading the body: {e}");
            return json_response(400, json!({ "error": format!("malformed: reading the body: {e}") }));
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let task = {
        let state = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            let mut db = state.db.lock().unwrap_or_else(PoisonError::into_inner);
            ingest(&mut db, &bytes, state.enroll_on_first_use, now)
        })
    };
    let result = match task.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%peer, "report ingest task failed: {e}");
            return json_response(500, json!({ "error": "io: the ingest task failed" }));
        }
    };
    match result {
        Ok(a) => {
            tracing::info!(device = %a.device_id, acked = a.acked, records = a.new_records, enrolled = a.enrolled, %peer, "report batch stored");
            json_response(200, json!({ "acked": a.acked }))
        }
        Err(e) => refusal(&e, peer),
    }
}

fn too_large(peer: SocketAddr) -> Response {
    let e = IngestError::TooLarge { what: "the compressed batch", limit: MAX_COMPRESSED };
    refusal(&e, peer)
}

/// Logs a refusal with the device and reason, and answers it.
fn refusal(e: &IngestError, peer: SocketAddr) -> Response {
    let device = e.device().unwrap_or("?");
    let status = e.status();
    match e {
        IngestError::Replay { acked, .. } => {
            tracing::info!(device, reason = e.code(), status, acked, %peer, "report batch refused: nothing new");
            json_response(409, json!({ "error": "replay", "acked": acked }))
        }
        IngestError::Db(_) => {
            tracing::error!(device, reason = e.code(), status, %peer, "report batch not stored: {e}");
            json_response(500, json!({ "error": e.to_string() }))
        }
        IngestError::Unenrolled { key_id, .. } => {
            tracing::warn!(device, reason = e.code(), status, key_id = %key_id, %peer, "report batch refused: {e}");
            json_response(status, json!({ "error": e.to_string() }))
        }
        _ => {
            tracing::warn!(device, reason = e.code(), status, %peer, "report batch refused: {e}");
            json_response(status, json!({ "error": e.to_string() }))
        }
    }
}
