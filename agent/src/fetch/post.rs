//! [`Fetcher::post`]: one `POST` of a small body (a report batch) and the server's answer.
//!
//! Statuses a retry may cure (5xx, 408, 429) come back as [`FetchError::Status`], so
//! [`super::with_backoff`] retries them and honours `Retry-After`; every other status is an
//! answer for the caller to interpret, with its body read up to a small cap. The wait for
//! the answer allows the connect and stall timeouts plus one second per KiB sent, so a body
//! crawling up a 9600 baud link is not cut for being slow.

use std::time::Duration;

use reqwest::header::{ACCEPT_ENCODING, CONTENT_TYPE};
use reqwest::StatusCode;
use url::Url;

use super::{FetchError, Fetcher};

/// A server's answer that a retry would not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostResponse {
    /// The status (never 5xx, 408 or 429).
    pub status: StatusCode,
    /// The body, at most the cap asked for.
    pub body: Vec<u8>,
}

impl Fetcher {
    /// `POST`s `body` with `Content-Type: content_type`; reads at most `cap` bytes of the
    /// answer. Transient statuses are errors (see the module docs).
    pub async fn post(
        &self,
        url: &Url,
        content_type: &str,
        body: Vec<u8>,
        cap: usize,
    ) -> Result<PostResponse, FetchError> {
        let limit = self.connect_timeout + self.stall_timeout + Duration::from_secs(body.len() as u64 / 1024);
        let req = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, content_type)
            .header(ACCEPT_ENCODING, "identity")
            .body(body);
        let resp = match tokio::time::timeout(limit, req.send()).await {
            Err(_) => return Err(FetchError::Timeout { url: url.clone(), after: limit }),
            Ok(Err(e)) => return Err(FetchError::from_reqwest(url, e)),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
        {
            return Err(FetchError::status(url, &resp));
        }
        let body = self.read_capped(url, resp, cap).await?;
        Ok(PostResponse { status, body })
    }
}
