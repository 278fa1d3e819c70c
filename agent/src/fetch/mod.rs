//! The agent's HTTP fetch layer: small signed documents (trust roots, channel index,
//! manifests) and resumable payload downloads from untrusted mirrors over flaky, slow,
//! sometimes metered links.
//!
//! Everything a mirror says in headers is a hint. Caps are enforced by counting the bytes
//! that arrive, never by believing `Content-Length` or `Content-Range` (those are only
//! checked for consistency with what we asked, and a `Content-Length` over the cap ends the
//! transfer before the body is read). Memory is bounded by the cap for documents and by
//! one 1 MiB piece for payloads.
//!
//! * [`Fetcher::get_conditional`] polls the channel index with `If-None-Match`.
//! * [`Fetcher::get_optional`] reads a document that may be absent (walking `trust/root.<n>`).
//! * [`Fetcher::download`] moves one payload towards `size` bytes, resuming with `Range` and
//!   `If-Range`, and hands data to a [`ChunkSink`] (the store in the daemon) in pieces of at most
//!   1 MiB; on any interruption it first hands over what already arrived, so a link that drops
//!   every 64 KiB still makes progress. [`Fetcher::download_with_retry`] is the loop around it.
//! * [`Fetcher::post`] sends a small body (a report batch) and returns the answer.
//! * [`with_backoff`] retries transient failures with full-jitter exponential backoff.
//! * Every body is cut by the stall timeout (no byte for `stall_timeout`) and by the
//!   minimum rate ([`MinRate`], TUF's slow-retrieval defence): a mirror trickling just fast
//!   enough never to stall is given up after one window below the floor
//!   ([`FetchError::TooSlow`]), so the caller can fail over to the next mirror.
//!
//! Trade-offs, chosen for satellite and cellular links:
//! * A resume without a remembered validator sends `Range` alone: payload names are content
//!   addresses, and the whole payload's SHA-256 is checked before use, so a splice costs one
//!   re-download but never a wrong apply, whereas restarting would cost every resume.
//! * A `200` to a ranged request (server ignores `Range`, or the validator changed) restarts
//!   from byte 0 on the same response; nothing is re-requested.
//! * Up to 1 MiB (or 10 s) of received data is held before [`ChunkSink::write`]; a cancelled
//!   download future loses that much, an interrupted transfer does not.
//! * Redirects: at most 5, http→http, https→https and http→https only.
//! * No `Accept-Encoding` is offered (`identity` is asked for), so byte offsets are file offsets.

mod backoff;
mod client;
mod download;
mod error;
mod floor;
mod post;
mod rate;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use backoff::{with_backoff, RetryPolicy};
pub use client::Fetcher;
pub use error::FetchError;
pub use floor::{attempt_progressed, MinRate};
pub use post::PostResponse;

/// Largest piece handed to [`ChunkSink::write`]; the store's chunk size.
pub const MAX_PIECE: usize = crate::store::CHUNK;

/// Fetch settings (the `[fetch]` section of the agent config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Limit on making a TCP (and TLS) connection. Default 15 s.
    pub connect_timeout: Duration,
    /// No byte for this long cuts a transfer; also bounds the wait for response headers
    /// after connecting. Default 60 s (DESIGN "Limits").
    pub stall_timeout: Duration,
    /// Bytes per second for payload downloads, shared by all downloads of one [`Fetcher`];
    /// `None` = unlimited. Documents are not paced (they are small).
    pub rate_limit: Option<u64>,
    /// The slowest acceptable body ([`MinRate`]); `None` = no floor. At most half of
    /// `rate_limit` is enforced, so the cap never trips it. Default [`MinRate::DEFAULT`].
    pub min_rate: Option<MinRate>,
    /// Proxy for all requests, e.g. `http://proxy:3128` (`NO_PROXY` still applies). `None`:
    /// the `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` environment applies.
    pub proxy: Option<String>,
    /// PEM bundle of CA certificates trusted in addition to the system roots.
    pub extra_ca: Option<PathBuf>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> FetchConfig {
        FetchConfig {
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(60),
            rate_limit: None,
            min_rate: Some(MinRate::DEFAULT),
            proxy: None,
            extra_ca: None,
            user_agent: concat!("ferry-agent/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// The result of a conditional GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// `304`: what we hold is current.
    NotModified,
    /// `200`: a new body (at most the cap) and its `ETag`, to send next time.
    Body {
        /// The body.
        bytes: Vec<u8>,
        /// The response's `ETag`, verbatim (weak ones included: `If-None-Match` accepts them).
        etag: Option<String>,
    },
}

/// Where a download stands: what the sink has committed, and the validator (`ETag`, or
/// `Last-Modified`) of the response that started the transfer, as stored by
/// [`ChunkSink::set_validator`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// Where the payload region starts in the file (0 for a whole file; a `.ferry`
    /// file's header length for its payload). Requests ask for `start + offset`.
    pub start: u64,
    /// Payload bytes committed, from the start of the region.
    pub offset: u64,
    /// The validator to send as `If-Range`.
    pub validator: Option<String>,
}

/// What one download call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownloadOutcome {
    /// Body bytes received over the wire by this call (written or not).
    pub bytes_received: u64,
    /// True when the stored prefix was discarded and the transfer began again at byte 0.
    pub restarted: bool,
}

/// Where downloaded bytes go: the daemon's payload store.
///
/// Calls arrive in order: `write` offsets are contiguous from the resume offset (or from 0
/// after `restart`), each piece at most [`MAX_PIECE`] bytes and never past the signed size.
/// Data counts as downloaded once `write` returns `Ok`, so it must commit before returning.
///
/// The methods are called **on the async task that drives the download**, and may block
/// (file syncs, SQLite commits with `synchronous=FULL`): drive the download on a multi-threaded runtime
/// and wrap blocking work in `tokio::task::block_in_place`, or give the download its own
/// thread and current-thread runtime. Writes are at most one per MiB, plus one per
/// interruption.
pub trait ChunkSink: Send {
    /// Stores `bytes` at `offset` and commits them.
    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), FetchError>;
    /// Discards everything stored: the transfer restarts at byte 0.
    fn restart(&mut self) -> Result<(), FetchError>;
    /// Remembers the validator of the response that (re)started the transfer at byte 0,
    /// for the next resume's `If-Range`. Called before that response's first `write`.
    fn set_validator(&mut self, validator: Option<String>) -> Result<(), FetchError>;
}
