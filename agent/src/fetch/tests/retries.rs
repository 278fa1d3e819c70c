//! `with_backoff`: what is retried, how often, and how long it waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::{cfg, fetcher, serve};
use crate::fetch::{with_backoff, FetchError, RetryPolicy};

fn policy(max_attempts: usize) -> RetryPolicy {
    RetryPolicy { min_delay: Duration::from_millis(10), max_delay: Duration::from_secs(5), max_attempts }
}

/// Routes: `/busy` answers 503 with `Retry-After: 2` once, then 200; `/down` always 503;
/// anything else 404. Counts requests.
async fn mirror() -> (url::Url, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let (busy, down, missing) = (hits.clone(), hits.clone(), hits.clone());
    let app = Router::new()
        .route(
            "/busy",
            get(move || async move {
                match busy.fetch_add(1, Ordering::SeqCst) {
                    0 => (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "2")]).into_response(),
                    _ => "fine".into_response(),
                }
            }),
        )
        .route(
            "/down",
            get(move || async move {
                down.fetch_add(1, Ordering::SeqCst);
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
        .fallback(move || async move {
            missing.fetch_add(1, Ordering::SeqCst);
            StatusCode::NOT_FOUND
        });
    (serve(app).await, hits)
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (base, hits) = mirror().await;
    let url = base.join("busy").expect("url");
    let f = fetcher(cfg());
    let start = Instant::now();
    let got = with_backoff(&policy(3), "index", || f.get_optional(&url, 64)).await.expect("second try");
    let waited = start.elapsed();
    assert_eq!(got, Some(b"fine".to_vec()));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert!(waited < Duration::from_secs(4), "retried after {waited:?}");
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let (base, hits) = mirror().await;
    let url = base.join("channels/gone/index").expect("url");
    let f = fetcher(cfg());
    let start = Instant::now();
    let err = with_backoff(&policy(5), "index", || f.get_conditional(&url, None, 64)).await.expect_err("404");
    assert!(matches!(err, FetchError::Status { status, .. } if status == 404), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn transient_failures_use_up_the_attempts() {
    let (base, hits) = mirror().await;
    let url = base.join("down").expect("url");
    let f = fetcher(cfg());
    let err = with_backoff(&policy(3), "index", || f.get_optional(&url, 64)).await.expect_err("always down");
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), None);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}
