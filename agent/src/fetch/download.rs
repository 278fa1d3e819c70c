//! Resumable payload downloads into a [`ChunkSink`].
//!
//! One call makes one request: from byte 0, or from the committed offset with
//! `Range: bytes=<offset>-` and `If-Range: <validator>`. A `206` must name exactly the range
//! asked for (start = offset, end and total within the signed size); a `200` means the server
//! ignored the range or the file changed, and the sink restarts from 0 on the same response.
//! Bytes are counted against the signed size as they arrive: the piece that would pass it is
//! cut, and the transfer ends with `SizeExceeded` without writing a byte beyond the size.
//!
//! Received bytes are handed over in pieces of at most [`MAX_PIECE`] (and at least every
//! [`FLUSH_AFTER`] on a slow link, so a power cut loses little). On any interruption (drop,
//! stall, a window below the minimum rate, error, excess) the piece in hand is written first,
//! then the error returned, so every attempt keeps what it received.
//! [`Fetcher::download_with_retry`] resumes after transient failures and resets its attempt
//! budget whenever an attempt made progress at the minimum rate at least; a body cut for
//! being below that rate ends it (the caller tries another mirror).

use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::StatusCode;
use tokio::time::Instant;
use url::Url;

use super::backoff::log_retry;
use super::floor::{attempt_progressed, Watchdog};
use super::{ChunkSink, DownloadOutcome, FetchError, Fetcher, Resume, RetryPolicy, MAX_PIECE};

/// Longest time received bytes wait in memory before they are handed to the sink.
const FLUSH_AFTER: Duration = Duration::from_secs(10);

impl Fetcher {
    /// Downloads `url` until the sink holds exactly `size` bytes (the signed size), starting
    /// at `resume.offset`. Makes one request; see the module docs for `Range`/`If-Range`,
    /// restarts and size enforcement. Paced by the rate limit, cut by the stall timeout.
    ///
    /// On error, what arrived before it has been written to the sink; resume from the sink's
    /// committed offset and validator.
    pub async fn download(
        &self,
        url: &Url,
        size: u64,
        resume: Resume,
        sink: &mut dyn ChunkSink,
    ) -> Result<DownloadOutcome, FetchError> {
        let mut state = resume;
        let mut outcome = DownloadOutcome::default();
        self.download_once(url, size, &mut state, sink, &mut outcome).await?;
        Ok(outcome)
    }

    /// [`Fetcher::download`] in a loop: resumes after transient failures with the policy's
    /// backoff (and `Retry-After`), and counts only attempts in a row that made no progress
    /// against `policy.max_attempts`, so a link that drops every 64 KiB still finishes.
    /// Progress is a longer committed prefix gained at the minimum rate at least
    /// ([`super::attempt_progressed`]), so a mirror that trickles a few bytes and hangs up
    /// runs out of attempts; a body cut for being below that rate ([`FetchError::TooSlow`])
    /// is returned at once. The outcome sums all attempts.
    pub async fn download_with_retry(
        &self,
        policy: &RetryPolicy,
        url: &Url,
        size: u64,
        resume: Resume,
        sink: &mut dyn ChunkSink,
    ) -> Result<DownloadOutcome, FetchError> {
        let mut state = resume;
        let mut outcome = DownloadOutcome::default();
        let mut delays = policy.delays();
        let mut attempt = 0usize;
        loop {
            let before = state.offset;
            let began = Instant::now();
            let err = match self.download_once(url, size, &mut state, sink, &mut outcome).await {
                Ok(()) => return Ok(outcome),
                Err(e) if !e.is_transient() || e.is_too_slow() => return Err(e),
                Err(e) => e,
            };
            attempt += 1;
            // Progress is a longer committed prefix; a restart that got less than before is
            // not, or a server ignoring Range on a link that drops would loop forever.
            let gained = state.offset.saturating_sub(before);
            if attempt_progressed(self.min_rate, gained, began.elapsed()) {
                delays = policy.delays();
            }
            let Some(delay) = delays.next() else { return Err(err) };
            let delay = policy.honour_retry_after(delay, &err);
            log_retry("payload", attempt, &err, delay);
            tokio::time::sleep(delay).await;
        }
    }

    /// One request; advances `state` as the sink commits.
    async fn download_once(
        &self,
        url: &Url,
        size: u64,
        state: &mut Resume,
        sink: &mut dyn ChunkSink,
        outcome: &mut DownloadOutcome,
    ) -> Result<(), FetchError> {
        if state.offset > size {
            tracing::warn!(url = %url, offset = state.offset, size, "stored payload longer than its size; restarting");
            restart(sink, state, outcome)?;
        }
        if state.offset == size {
            return Ok(());
        }
        // The payload may be a region of the file (a `.ferry` file's payload after its
        // header): positions sent to the server are `start + offset`.
        let start = state.start;
        let ranged = start + state.offset > 0;
        let mut skip = 0u64;
        let mut req = self.get(url);
        if ranged {
            req = req.header(RANGE, format!("bytes={}-", start + state.offset));
            if let Some(v) = state.validator.as_deref() {
                match reqwest::header::HeaderValue::from_str(v) {
                    Ok(v) => req = req.header(IF_RANGE, v),
                    Err(_) => {
                        tracing::debug!(url = %url, "stored validator is not a header value; resuming without If-Range")
                    }
                }
            }
        }
        let resp = self.send(url, req).await?;
        let too_big = || FetchError::SizeExceeded { url: url.clone(), limit: size };
        let hint = resp.content_length();
        match resp.status() {
            StatusCode::PARTIAL_CONTENT if ranged => {
                check_content_range(url, resp.headers(), start + state.offset, start + size)?;
                if hint.is_some_and(|len| len > size - state.offset) {
                    return Err(too_big());
                }
            }
            StatusCode::OK => {
                if hint.is_some_and(|len| len > start + size) {
                    return Err(too_big());
                }
                skip = start;
                if state.offset > 0 {
                    tracing::info!(url = %url, offset = state.offset, "server sent the whole file (validator changed or Range unsupported); restarting");
                    restart(sink, state, outcome)?;
                }
                let validator = validator(resp.headers());
                sink.set_validator(validator.clone())?;
                state.validator = validator;
            }
            StatusCode::PARTIAL_CONTENT => {
                return Err(FetchError::BadResponse {
                    url: url.clone(),
                    detail: "206 to a request without Range".into(),
                })
            }
            _ => return Err(FetchError::status(url, &resp)),
        }

        let mut body = Body { sink, state, pending: Vec::new(), last_flush: Instant::now() };
        let mut stream = resp.bytes_stream();
        let mut watch = Watchdog::new(url, self.stall_timeout, self.min_rate);
        let interrupted = loop {
            match watch.next(&mut stream).await {
                Ok(Some(Ok(piece))) => {
                    let wire = piece.len();
                    outcome.bytes_received += piece.len() as u64;
                    // A whole-file answer carries the region's prefix first: drop it.
                    let dropped = skip.min(piece.len() as u64) as usize;
                    skip -= dropped as u64;
                    let piece = piece.slice(dropped..);
                    let room = size - body.held();
                    let (keep, excess) = piece.split_at(piece.len().min(room as usize));
                    body.push(keep)?;
                    if !excess.is_empty() {
                        break too_big();
                    }
                    if let Err(slow) = watch.arrived(wire) {
                        break slow;
                    }
                    if let Some(limiter) = &self.limiter {
                        limiter.pace(wire).await;
                    }
                    watch.ready();
                }
                Ok(None) => break FetchError::Truncated { url: url.clone(), received: body.held(), expected: size },
                Ok(Some(Err(e))) => break FetchError::from_reqwest(url, e),
                // A stall, or a window below the minimum rate.
                Err(e) => break e,
            }
        };
        body.flush()?;
        match interrupted {
            FetchError::SizeExceeded { .. } => Err(interrupted),
            // Every byte is in: an end, reset or stall after the last one costs nothing.
            _ if body.state.offset == size => Ok(()),
            _ => Err(interrupted),
        }
    }
}

/// The received bytes not yet handed to the sink, and the sink.
struct Body<'a> {
    sink: &'a mut dyn ChunkSink,
    state: &'a mut Resume,
    pending: Vec<u8>,
    last_flush: Instant,
}

impl Body<'_> {
    /// Bytes of the file held: committed plus pending.
    fn held(&self) -> u64 {
        self.state.offset + self.pending.len() as u64
    }

    /// Takes `bytes`, writing every full piece (and the pending one once it is old).
    fn push(&mut self, mut bytes: &[u8]) -> Result<(), FetchError> {
        while !bytes.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(MAX_PIECE);
            }
            let take = bytes.len().min(MAX_PIECE - self.pending.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == MAX_PIECE {
                self.flush()?;
            }
        }
        if self.last_flush.elapsed() >= FLUSH_AFTER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending piece; it counts once the sink returns.
    fn flush(&mut self) -> Result<(), FetchError> {
        self.last_flush = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        self.sink.write(self.state.offset, &self.pending)?;
        self.state.offset += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

/// Discards the stored prefix.
fn restart(sink: &mut dyn ChunkSink, state: &mut Resume, outcome: &mut DownloadOutcome) -> Result<(), FetchError> {
    sink.restart()?;
    *state = Resume { start: state.start, ..Resume::default() };
    outcome.restarted = true;
    Ok(())
}

/// The validator to resume against: a strong `ETag` (a weak one must not be used in
/// `If-Range`), else `Last-Modified`.
fn validator(headers: &HeaderMap) -> Option<String> {
    let get = |name| headers.get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok());
    match get(ETAG) {
        Some(etag) if !etag.starts_with("W/") => Some(etag.to_owned()),
        _ => get(LAST_MODIFIED).map(str::to_owned),
    }
}

/// Checks that a 206's `Content-Range` is `bytes <offset>-<end>/<size or *>` with
/// `end < size`: exactly the range asked for, within the signed size.
fn check_content_range(url: &Url, headers: &HeaderMap, offset: u64, size: u64) -> Result<(), FetchError> {
    let bad = |detail: String| FetchError::BadResponse { url: url.clone(), detail };
    let raw = headers.get(CONTENT_RANGE).ok_or_else(|| bad("206 without Content-Range".into()))?;
    let text = raw.to_str().map_err(|_| bad("Content-Range is not text".into()))?;
    let (start, end, total) = parse_content_range(text).ok_or_else(|| bad(format!("Content-Range {text:?}")))?;
    if total.is_some_and(|t| t > size) || end >= size {
        return Err(FetchError::SizeExceeded { url: url.clone(), limit: size });
    }
    if start != offset || total.is_some_and(|t| t != size) {
        return Err(bad(format!("Content-Range {text:?} for a request from byte {offset} of {size}")));
    }
    Ok(())
}

/// `bytes <start>-<end>/<total or *>` with `start <= end`.
fn parse_content_range(s: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = s.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let num =
        |t: &str| (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse::<u64>().ok()).flatten();
    let (start, end) = (num(start)?, num(end)?);
    let total = if total == "*" { None } else { Some(num(total)?) };
    (start <= end).then_some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 99, Some(100))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        for bad in ["bytes 9-5/100", "bytes -5/100", "bytes 0-99", "items 0-9/10", "bytes 0-+9/10", "bytes */100"] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn content_range_must_match_the_request() {
        let url = Url::parse("http://m/p").expect("url");
        let check = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_RANGE, v.parse().expect("header"));
            check_content_range(&url, &h, 10, 100)
        };
        assert!(check("bytes 10-99/100").is_ok());
        assert!(check("bytes 10-49/*").is_ok());
        assert!(matches!(check("bytes 0-99/100"), Err(FetchError::BadResponse { .. })));
        assert!(matches!(check("bytes 10-99/90"), Err(FetchError::BadResponse { .. })));
        assert!(matches!(check("bytes 10-199/200"), Err(FetchError::SizeExceeded { .. })));
        assert!(matches!(check("bytes 10-100/*"), Err(FetchError::SizeExceeded { .. })));
        assert!(matches!(check_content_range(&url, &HeaderMap::new(), 10, 100), Err(FetchError::BadResponse { .. })));
    }

    #[test]
    fn validator_prefers_a_strong_etag() {
        let mut h = HeaderMap::new();
        h.insert(LAST_MODIFIED, "Thu, 01 Jan 2026 00:00:00 GMT".parse().expect("header"));
        assert_eq!(validator(&h).as_deref(), Some("Thu, 01 Jan 2026 00:00:00 GMT"));
        h.insert(ETAG, "W/\"weak\"".parse().expect("header"));
        assert_eq!(validator(&h).as_deref(), Some("Thu, 01 Jan 2026 00:00:00 GMT"));
        h.insert(ETAG, "\"strong\"".parse().expect("header"));
        assert_eq!(validator(&h).as_deref(), Some("\"strong\""));
        assert_eq!(validator(&HeaderMap::new()), None);
    }
}
