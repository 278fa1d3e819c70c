//! [`Fetcher`]: one configured `reqwest::Client` (timeouts, proxy, extra CA, redirect
//! policy, rate limit) and the small-document requests: the conditional GET that polls a
//! channel index and the GET that may find nothing (walking `trust/root.<n>`).
//!
//! Bodies are read as a stream with the stall timeout around every piece (and the minimum
//! rate over every window, see [`super::floor`]) and the cap checked before each piece is kept, growing the buffer only up to the cap, so a mirror that sends
//! an endless body costs at most the cap in memory.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT_ENCODING, ETAG, IF_NONE_MATCH};
use reqwest::redirect;
use reqwest::{RequestBuilder, Response, StatusCode};
use url::Url;

use super::floor::{MinRate, Watchdog};
use super::rate::RateLimiter;
use super::{Conditional, FetchConfig, FetchError};

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client of the agent. Cheap to clone; clones share connections and the rate limit.
#[derive(Debug, Clone)]
pub struct Fetcher {
    pub(super) client: reqwest::Client,
    pub(super) connect_timeout: Duration,
    pub(super) stall_timeout: Duration,
    pub(super) limiter: Option<Arc<RateLimiter>>,
    pub(super) min_rate: Option<MinRate>,
}

impl Fetcher {
    /// Builds the client. Reads `cfg.extra_ca` (a blocking read, meant for start-up).
    pub fn new(cfg: &FetchConfig) -> Result<Fetcher, FetchError> {
        Fetcher::build(cfg, true)
    }

    /// Builds the client; `env_proxy = false` ignores the proxy environment (tests, whose
    /// servers are on 127.0.0.1).
    pub(crate) fn build(cfg: &FetchConfig, env_proxy: bool) -> Result<Fetcher, FetchError> {
        let setup = |detail: String| FetchError::Setup { detail };
        if cfg.rate_limit == Some(0) {
            return Err(setup("rate limit must be more than 0 bytes per second".into()));
        }
        if cfg.stall_timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return Err(setup("timeouts must be more than zero".into()));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(cfg.user_agent.as_str())
            .connect_timeout(cfg.connect_timeout)
            .redirect(redirect::Policy::custom(|attempt| match redirect_refusal(attempt.previous(), attempt.url()) {
                Some(why) => attempt.error(why),
                None => attempt.follow(),
            }))
            .referer(false)
            .tcp_keepalive(Duration::from_secs(30));
        if let Some(proxy) = &cfg.proxy {
            let proxy = reqwest::Proxy::all(proxy.as_str())
                .map_err(|e| setup(format!("proxy {proxy:?}: {e}")))?
                .no_proxy(reqwest::NoProxy::from_env());
            builder = builder.proxy(proxy);
        } else if !env_proxy {
            builder = builder.no_proxy();
        }
        if let Some(path) = &cfg.extra_ca {
            let pem = std::fs::read(path).map_err(|e| setup(format!("reading CA bundle {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup(format!("CA bundle {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(setup(format!("CA bundle {}: no certificates", path.display())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| setup(e.to_string()))?;
        Ok(Fetcher {
            client,
            connect_timeout: cfg.connect_timeout,
            stall_timeout: cfg.stall_timeout,
            limiter: cfg.rate_limit.map(|r| Arc::new(RateLimiter::new(r))),
            min_rate: cfg.min_rate.and_then(|m| m.under_cap(cfg.rate_limit)),
        })
    }

    /// The minimum rate in force (the configured one, at most half the rate limit).
    pub fn min_rate(&self) -> Option<MinRate> {
        self.min_rate
    }

    /// GET with `If-None-Match: <etag>` when one is given. `304` → [`Conditional::NotModified`];
    /// `200` → the body, at most `cap` bytes, and its `ETag`. Anything else is an error.
    pub async fn get_conditional(&self, url: &Url, etag: Option<&str>, cap: usize) -> Result<Conditional, FetchError> {
        let mut req = self.get(url);
        let etag = etag.and_then(|e| HeaderValue::from_str(e).ok());
        let conditional = etag.is_some();
        if let Some(etag) = etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        let resp = self.send(url, req).await?;
        match resp.status() {
            StatusCode::NOT_MODIFIED if conditional => Ok(Conditional::NotModified),
            StatusCode::OK => {
                let etag = resp.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let bytes = self.read_capped(url, resp, cap).await?;
                Ok(Conditional::Body { bytes, etag })
            }
            _ => Err(FetchError::status(url, &resp)),
        }
    }

    /// GET a document that may be absent: `404` → `None`; `200` → the body, at most `cap`
    /// bytes. Anything else is an error (a `403` is not taken as "absent").
    pub async fn get_optional(&self, url: &Url, cap: usize) -> Result<Option<Vec<u8>>, FetchError> {
        let resp = self.send(url, self.get(url)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => Ok(Some(self.read_capped(url, resp, cap).await?)),
            _ => Err(FetchError::status(url, &resp)),
        }
    }

    /// A GET asking for the bytes as stored.
    pub(super) fn get(&self, url: &Url) -> RequestBuilder {
        self.client.get(url.clone()).header(ACCEPT_ENCODING, "identity")
    }

    /// Sends, waiting at most connect + stall timeout for the response headers.
    pub(super) async fn send(&self, url: &Url, req: RequestBuilder) -> Result<Response, FetchError> {
        let limit = self.connect_timeout + self.stall_timeout;
        match tokio::time::timeout(limit, req.send()).await {
            Err(_) => Err(FetchError::Timeout { url: url.clone(), after: limit }),
            Ok(Err(e)) => Err(FetchError::from_reqwest(url, e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Reads a whole body of at most `cap` bytes, allocating at most `cap`.
    pub(super) async fn read_capped(&self, url: &Url, resp: Response, cap: usize) -> Result<Vec<u8>, FetchError> {
        let too_big = || FetchError::SizeExceeded { url: url.clone(), limit: cap as u64 };
        // The announced length is a hint: over the cap it saves reading; under it, it only
        // sizes the first allocation.
        let hint = resp.content_length();
        if hint.is_some_and(|len| len > cap as u64) {
            return Err(too_big());
        }
        let mut buf = Vec::with_capacity(hint.map_or(0, |len| len as usize).min(cap).min(1 << 20));
        let mut stream = resp.bytes_stream();
        let mut watch = Watchdog::new(url, self.stall_timeout, self.min_rate);
        loop {
            let piece = match watch.next(&mut stream).await? {
                None => return Ok(buf),
                Some(Err(e)) => return Err(FetchError::from_reqwest(url, e)),
                Some(Ok(piece)) => piece,
            };
            if piece.len() > cap - buf.len() {
                return Err(too_big());
            }
            if buf.capacity() - buf.len() < piece.len() {
                let want = (buf.len() + piece.len()).max(buf.capacity() * 2).min(cap);
                buf.reserve_exact(want - buf.len());
            }
            buf.extend_from_slice(&piece);
            watch.arrived(piece.len())?;
            watch.ready();
        }
    }
}

/// Why a redirect from the chain `previous` (the original URL first) to `next` is refused,
/// or `None` to follow it: at most [`MAX_REDIRECTS`], only http and https, and never from
/// https down to http.
pub(super) fn redirect_refusal(previous: &[Url], next: &Url) -> Option<String> {
    if previous.len() > MAX_REDIRECTS {
        return Some(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let from = previous.last().map_or("https", Url::scheme);
    match (from, next.scheme()) {
        ("http", "http") | ("http", "https") | ("https", "https") => None,
        ("https", "http") => Some(format!("https to http downgrade to {next}")),
        (_, scheme) => Some(format!("scheme {scheme:?} of {next}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn redirect_rules() {
        let http = u("http://m/a");
        let https = u("https://m/a");
        assert_eq!(redirect_refusal(std::slice::from_ref(&http), &u("http://n/b")), None);
        assert_eq!(redirect_refusal(std::slice::from_ref(&http), &u("https://n/b")), None);
        assert_eq!(redirect_refusal(std::slice::from_ref(&https), &u("https://n/b")), None);
        assert!(
            redirect_refusal(std::slice::from_ref(&https), &u("http://n/b")).is_some_and(|m| m.contains("downgrade"))
        );
        // http → https → http is a downgrade at the second hop.
        assert!(redirect_refusal(&[http.clone(), https.clone()], &u("http://n/b")).is_some());
        assert!(redirect_refusal(std::slice::from_ref(&http), &u("ftp://n/b")).is_some());
        assert!(redirect_refusal(std::slice::from_ref(&http), &u("file:///etc/passwd")).is_some());
        let five = vec![http.clone(); 5];
        assert_eq!(redirect_refusal(&five, &http), None);
        let six = vec![http.clone(); 6];
        assert!(redirect_refusal(&six, &http).is_some_and(|m| m.contains("redirects")));
    }

    #[test]
    fn setup_errors_are_named() {
        let bad = |cfg: FetchConfig| match Fetcher::new(&cfg) {
            Err(FetchError::Setup { detail }) => detail,
            other => panic!("expected a setup error, got {other:?}"),
        };
        assert!(bad(FetchConfig { rate_limit: Some(0), ..FetchConfig::default() }).contains("rate limit"));
        assert!(bad(FetchConfig { proxy: Some("::not a url".into()), ..FetchConfig::default() }).contains("proxy"));
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        assert!(bad(FetchConfig { extra_ca: Some(empty), ..FetchConfig::default() }).contains("ca.pem"));
        assert!(
            bad(FetchConfig { extra_ca: Some(dir.path().join("absent")), ..FetchConfig::default() }).contains("absent")
        );
        Fetcher::new(&FetchConfig::default()).expect("default config builds");
    }
}
