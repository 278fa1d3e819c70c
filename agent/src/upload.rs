//! Reports over the network (DESIGN "Reports"): after a poll cycle, at most once per
//! `[reports] interval`, the daemon sends the outbox to `[reports] url` one signed batch at
//! a time, until it is empty or an upload fails.
//!
//! The protocol (the receiving side is `bundler serve`):
//!
//! * `POST <url>` with `Content-Type: application/x-ferry-report-batch`; the body is zstd
//!   (level 3) of the batch's signed envelope ([`ferry_proto::report::ReportBatch::sign`]).
//! * `200 {"acked": N}`: the server stored every record up to `N`; they are removed here,
//!   and the next batch starts after `N`.
//! * `409 {"error": "replay", "acked": N}`: nothing in the batch was new; the same.
//! * `413`: too large; the batch is halved and sent again, down to one record.
//! * `401`/`403` (device not enrolled, unknown key), `400` (malformed or tampered), any other
//!   4xx, or an answer without `acked`: nothing is removed, the reason is logged, the pass
//!   ends. So does an acknowledgement below the batch's first record (no progress).
//! * 5xx, 408, 429 and network failures are retried with backoff (`Retry-After` honoured),
//!   a few times; then the pass ends and the next cycle tries again.
//!
//! Failed uploads are logged, never recorded as events: an event per failed upload would
//! feed the very outbox that cannot be emptied. SQLite work runs on blocking threads.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::Reason;
use reqwest::StatusCode;
use url::Url;

use crate::config::Config;
use crate::failure::Failure;
use crate::fetch::{with_backoff, FetchError, Fetcher, RetryPolicy};
use crate::identity::Identity;
use crate::outbox::{Batch, BatchPlan, Outbox, CONTENT_TYPE, MAX_BATCH_RECORDS};
use crate::store::Store;

/// Largest answer body read.
pub const MAX_ANSWER: usize = 64 << 10;

/// Most batches sent in one pass.
const MAX_BATCHES_PER_PASS: usize = 1000;

/// Setting holding the Unix time of the last upload pass.
const LAST_UPLOAD_KEY: &str = "outbox.last_upload";

/// Why an upload pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The network or the server failed, retries included.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The server refused the batch.
    #[error("{url}: HTTP {status}: {detail}")]
    Refused {
        /// The endpoint.
        url: Url,
        /// Its status.
        status: StatusCode,
        /// Its `error` field, or a hint.
        detail: String,
    },
    /// The server answered something this agent cannot use.
    #[error("{url}: HTTP {status}: unusable answer: {detail}")]
    BadAnswer {
        /// The endpoint.
        url: Url,
        /// Its status.
        status: StatusCode,
        /// What was wrong.
        detail: String,
    },
    /// The store or the device key.
    #[error("{0}")]
    Local(Failure),
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct UploadOutcome {
    /// Batches the server accepted (stored or recognised as replays).
    pub batches: usize,
    /// Records removed from the outbox.
    pub removed: u64,
    /// The last acknowledgement applied.
    pub acked: Option<u64>,
    /// Why the pass stopped before the outbox was empty, if it did.
    pub error: Option<UploadError>,
}

/// The daemon's hook after every poll cycle: makes the device identity on the first cycle,
/// compacts the outbox, and uploads when a URL is configured and the interval has passed
/// (always with `force`). Never fails: problems are logged.
pub async fn after_cycle(cfg: &Config, fetch: &Fetcher, force: bool) {
    let due = blocking(cfg, move |cfg| {
        Identity::load_or_create(&cfg.state_dir)?;
        let store = Store::open(&cfg.state_dir)?;
        let outbox = Outbox::new(&store);
        outbox.compact(cfg.reports.max_outbox_bytes)?;
        if cfg.reports.url.is_none() || outbox.state()?.records == 0 {
            return Ok(false);
        }
        let now = crate::store::now();
        let last: Option<u64> = store.setting(LAST_UPLOAD_KEY)?.and_then(|v| v.parse().ok());
        // The poll pause is jittered by a tenth: allow as much, so that an interval equal to
        // the poll interval means every cycle.
        let grace = cfg.poll_interval.as_secs() / 10 + 1;
        let due = force || last.is_none_or(|last| now < last || now - last + grace >= cfg.reports.interval.as_secs());
        if due {
            store.set_setting(LAST_UPLOAD_KEY, &now.to_string())?;
        }
        Ok(due)
    })
    .await;
    let url = match (due, &cfg.reports.url) {
        (Ok(true), Some(url)) => url,
        (Err(e), _) => {
            tracing::error!("report outbox: {e}");
            return;
        }
        _ => return,
    };
    let out = upload(cfg, fetch, url).await;
    if out.batches > 0 {
        tracing::info!(batches = out.batches, removed = out.removed, acked = out.acked, "reports delivered");
    }
    if let Some(e) = &out.error {
        let hint = match e {
            UploadError::Refused { status, .. } if matches!(status.as_u16(), 401 | 403) => {
                "enrol this device's key (`ferry-agent identity` shows it)"
            }
            _ => "reports are kept and sent later",
        };
        tracing::warn!(url = %url, "report upload stopped: {e}; {hint}");
    }
}

/// One upload pass: sends batches until the outbox is empty or an upload fails.
pub async fn upload(cfg: &Config, fetch: &Fetcher, url: &Url) -> UploadOutcome {
    let mut out = UploadOutcome::default();
    if let Err(e) = upload_batches(cfg, fetch, url, &mut out).await {
        out.error = Some(e);
    }
    out
}

async fn upload_batches(cfg: &Config, fetch: &Fetcher, url: &Url, out: &mut UploadOutcome) -> Result<(), UploadError> {
    let identity = Arc::new(blocking(cfg, |cfg| Ok(Identity::load_or_create(&cfg.state_dir)?)).await?);
    let policy = retry_policy(cfg);
    let mut max_records = MAX_BATCH_RECORDS;
    for _ in 0..MAX_BATCHES_PER_PASS {
        let id = identity.clone();
        let batch = blocking(cfg, move |cfg| {
            let store = Store::open(&cfg.state_dir)?;
            let plan = BatchPlan { max_records, ..BatchPlan::new(cfg, id.key(), &store)? };
            // Every upload follows the previous batch's acknowledgement, so each carries the
            // dropped count not yet acknowledged.
            Outbox::new(&store).make_batch(0, &plan, true)
        })
        .await?;
        let Some(batch) = batch else { return Ok(()) };
        tracing::debug!(first = batch.first_seq, last = batch.last_seq, bytes = batch.body.len(), "sending reports");
        let answer =
            with_backoff(&policy, "report batch", || fetch.post(url, CONTENT_TYPE, batch.body.clone(), MAX_ANSWER))
                .await?;
        crate::crash_point!("upload::after-post");
        let status = answer.status;
        match status {
            StatusCode::OK | StatusCode::CONFLICT => {
                let acked = parse_acked(&answer.body).map_err(|detail| UploadError::BadAnswer {
                    url: url.clone(),
                    status,
                    detail,
                })?;
                let ack = blocking(cfg, move |cfg| Ok(Outbox::new(&Store::open(&cfg.state_dir)?).acknowledge(acked)?))
                    .await?;
                crate::crash_point!("upload::after-ack");
                if ack.clamped {
                    tracing::warn!(url = %url, asked = acked, applied = ack.acked, "server acknowledged records never sent");
                }
                out.batches += 1;
                out.removed += ack.removed;
                out.acked = Some(ack.acked);
                if ack.acked < batch.first_seq {
                    return Err(no_progress(url, status, acked, &batch));
                }
                max_records = MAX_BATCH_RECORDS;
            }
            StatusCode::PAYLOAD_TOO_LARGE if batch.records > 1 => {
                max_records = batch.records / 2;
                tracing::info!(url = %url, records = max_records, "report batch too large for the server; halving");
            }
            _ => {
                return Err(UploadError::Refused {
                    url: url.clone(),
                    status,
                    detail: error_detail(status, &answer.body),
                })
            }
        }
    }
    Ok(())
}

/// Uploads retry a few times only: the next cycle tries again anyway.
fn retry_policy(cfg: &Config) -> RetryPolicy {
    let max = cfg.fetch.max_backoff.min(Duration::from_secs(60));
    RetryPolicy { min_delay: Duration::from_secs(1).min(max), max_delay: max, max_attempts: 4 }
}

fn no_progress(url: &Url, status: StatusCode, acked: u64, batch: &Batch) -> UploadError {
    UploadError::BadAnswer {
        url: url.clone(),
        status,
        detail: format!(
            "acknowledged through {acked}, below the batch's first record {} (records {}-{} kept)",
            batch.first_seq, batch.first_seq, batch.last_seq
        ),
    }
}

/// The `acked` field of a `200` or `409` answer.
fn parse_acked(body: &[u8]) -> Result<u64, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        acked: u64,
    }
    serde_json::from_slice::<Answer>(body).map(|a| a.acked).map_err(|e| format!("expected {{\"acked\": N}}: {e}"))
}

/// The server's `error` field (printable, at most 200 characters), or a hint by status.
fn error_detail(status: StatusCode, body: &[u8]) -> String {
    let field = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .map(|e| e.chars().filter(|c| !c.is_control()).take(200).collect::<String>());
    let hint = match status.as_u16() {
        401 | 403 => "device key not enrolled",
        400 => "batch refused as malformed",
        413 => "one record is too large for the server",
        _ => "refused",
    };
    match field {
        Some(f) if !f.is_empty() => format!("{f} ({hint})"),
        _ => hint.to_string(),
    }
}

/// Runs store work on a blocking thread with a clone of the config.
async fn blocking<T: Send + 'static>(
    cfg: &Config,
    f: impl FnOnce(&Config) -> Result<T, Failure> + Send + 'static,
) -> Result<T, UploadError> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || f(&cfg))
        .await
        .map_err(|e| Failure::new(Reason::Io, format!("report thread: {e}")))
        .and_then(|r| r)
        .map_err(UploadError::Local)
}

#[cfg(test)]
mod tests;
