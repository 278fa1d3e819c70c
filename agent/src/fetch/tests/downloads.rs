//! Payload downloads: resume over dropping links, restarts, size enforcement, stalls, pacing,
//! the minimum rate.

use std::time::{Duration, Instant};

use super::{cfg, fetcher, payload, Behaviour, MemSink, PayloadServer};
use crate::fetch::{FetchConfig, FetchError, MinRate, Resume, RetryPolicy};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn quick_retries() -> RetryPolicy {
    RetryPolicy { min_delay: Duration::from_millis(1), max_delay: Duration::from_millis(20), max_attempts: 3 }
}

#[tokio::test]
async fn resumes_over_a_link_that_drops_every_64k() {
    let size = 2 * MIB + 12_345;
    let server = PayloadServer::new(payload(size), Behaviour { drop_every: Some(64 * KIB), ..Behaviour::default() });
    let url = server.start().await;
    let f = fetcher(cfg());
    let mut sink = MemSink::default();

    // Every single call makes progress and fails transiently, until the last.
    let mut calls = 0;
    let outcome = loop {
        calls += 1;
        assert!(calls < 100, "no convergence");
        let before = sink.data.len();
        match f.download(&url, size as u64, sink.resume(), &mut sink).await {
            Ok(outcome) => break outcome,
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert_eq!(sink.data.len(), before + 64 * KIB, "progress kept across the drop: {e}");
            }
        }
    };
    assert_eq!(calls, size.div_ceil(64 * KIB));
    assert!(!outcome.restarted);
    assert!(sink.data == server.data, "payload differs");
    assert_eq!(sink.validator.as_deref(), Some("\"v1\""));
    assert_eq!(sink.restarts, 0);
    let served = server.served();
    assert!(served as f64 <= 1.02 * size as f64, "served {served} for {size}");
    assert_eq!(server.if_range_requests.load(std::sync::atomic::Ordering::SeqCst), calls as u64 - 1);
}

#[tokio::test]
async fn download_with_retry_converges_with_bounded_attempts() {
    // 3 attempts in a row without progress are allowed; every attempt here makes progress.
    let size = 2 * MIB;
    let server = PayloadServer::new(payload(size), Behaviour { drop_every: Some(64 * KIB), ..Behaviour::default() });
    let url = server.start().await;
    let mut sink = MemSink::default();
    let outcome = fetcher(cfg())
        .download_with_retry(&quick_retries(), &url, size as u64, Resume::default(), &mut sink)
        .await
        .expect("download");
    assert!(sink.data == server.data);
    assert_eq!(server.requests(), 32);
    assert_eq!(outcome.bytes_received, size as u64);
    assert!(server.served() as f64 <= 1.02 * size as f64);
}

#[tokio::test]
async fn restarts_when_the_server_ignores_range() {
    let size = 3 * MIB;
    let behaviour =
        Behaviour { ignore_range: true, drop_every: Some(MIB + 100), drop_first_only: true, ..Behaviour::default() };
    let server = PayloadServer::new(payload(size), behaviour);
    let url = server.start().await;
    let f = fetcher(cfg());
    let mut sink = MemSink::default();
    let err = f.download(&url, size as u64, sink.resume(), &mut sink).await.expect_err("first response drops");
    assert!(err.is_transient());
    assert_eq!(sink.data.len(), MIB + 100);
    let outcome = f.download(&url, size as u64, sink.resume(), &mut sink).await.expect("second call");
    assert!(outcome.restarted);
    assert_eq!(outcome.bytes_received, size as u64);
    assert_eq!(sink.restarts, 1);
    assert!(sink.data == server.data);
}

#[tokio::test]
async fn restarts_when_the_validator_changed() {
    let size = MIB;
    let behaviour = Behaviour { drop_every: Some(512 * KIB), drop_first_only: true, ..Behaviour::default() };
    let server = PayloadServer::new(payload(size), behaviour);
    let url = server.start().await;
    let f = fetcher(cfg());
    let mut sink = MemSink::default();
    f.download(&url, size as u64, sink.resume(), &mut sink).await.expect_err("drops");
    assert_eq!(sink.data.len(), 512 * KIB);
    assert_eq!(sink.validator.as_deref(), Some("\"v1\""));
    server.set_etag("\"v2\"");
    let outcome = f.download(&url, size as u64, sink.resume(), &mut sink).await.expect("restarted");
    assert!(outcome.restarted);
    assert_eq!(sink.validator.as_deref(), Some("\"v2\""));
    assert!(sink.data == server.data);
}

#[tokio::test]
async fn excess_bytes_are_never_written() {
    let size = 300 * KIB;
    for chunked in [true, false] {
        let server = PayloadServer::new(payload(size + 1000), Behaviour { chunked, ..Behaviour::default() });
        let url = server.start().await;
        let mut sink = MemSink::default();
        let err = fetcher(cfg()).download(&url, size as u64, Resume::default(), &mut sink).await.expect_err("too big");
        assert!(matches!(err, FetchError::SizeExceeded { limit, .. } if limit == size as u64), "{err}");
        assert!(!err.is_transient());
        assert_eq!(err.reason(), ferry_proto::Reason::SizeExceeded);
        assert!(sink.data.len() <= size, "wrote past the size");
        if chunked {
            // Counted: everything up to the size was kept.
            assert!(sink.data[..] == server.data[..size]);
        } else {
            // Announced: refused before reading the body.
            assert!(sink.data.is_empty());
        }
    }
}

#[tokio::test]
async fn a_stall_cuts_the_transfer_and_keeps_the_bytes() {
    let size = MIB;
    let server = PayloadServer::new(payload(size), Behaviour { stall_after: Some(100 * KIB), ..Behaviour::default() });
    let url = server.start().await;
    let f = fetcher(FetchConfig { stall_timeout: Duration::from_millis(500), ..cfg() });
    let mut sink = MemSink::default();
    let start = Instant::now();
    let err = f.download(&url, size as u64, Resume::default(), &mut sink).await.expect_err("stalls");
    let secs = start.elapsed().as_secs_f64();
    assert!(matches!(err, FetchError::Stall { received, .. } if received == 100 * KIB as u64), "{err}");
    assert!(err.is_transient());
    assert!((0.45..1.5).contains(&secs), "cut after {secs} s");
    assert_eq!(sink.data.len(), 100 * KIB);
}

#[tokio::test]
async fn rate_limit_paces_the_download() {
    let size = 300 * KIB;
    let server = PayloadServer::new(payload(size), Behaviour::default());
    let url = server.start().await;
    let f = fetcher(FetchConfig { rate_limit: Some(100 * KIB as u64), ..cfg() });
    let mut sink = MemSink::default();
    let start = Instant::now();
    f.download(&url, size as u64, Resume::default(), &mut sink).await.expect("download");
    let secs = start.elapsed().as_secs_f64();
    assert!((2.7..=3.3).contains(&secs), "300 KiB at 100 KiB/s took {secs} s");
    assert!(sink.data == server.data);
}

/// TUF's slow retrieval: 1 KiB every 100 ms (10 KiB/s) never stalls, but is below a floor
/// of 40 KiB/s: cut when the first window ends, every byte received kept, and the rest
/// resumes from a mirror without the trickle.
#[tokio::test]
async fn a_trickle_below_the_minimum_rate_is_cut_and_keeps_its_bytes() {
    let size = 200 * KIB;
    let trickle = Behaviour { trickle: Some((KIB, Duration::from_millis(100))), ..Behaviour::default() };
    let slow = PayloadServer::new(payload(size), trickle);
    let url = slow.start().await;
    let floor = MinRate { bytes_per_sec: 40 * KIB as u64, window: Duration::from_millis(800) };
    let f = fetcher(FetchConfig { min_rate: Some(floor), ..cfg() });
    let mut sink = MemSink::default();
    let start = Instant::now();
    let err = f.download(&url, size as u64, Resume::default(), &mut sink).await.expect_err("too slow");
    let secs = start.elapsed().as_secs_f64();
    let FetchError::TooSlow { rate, min, received, .. } = &err else { panic!("expected too slow, got {err}") };
    assert!((4 * KIB as u64..=14 * KIB as u64).contains(rate), "{err}");
    assert_eq!(*min, 40 * KIB as u64);
    assert!(err.is_transient() && err.is_too_slow());
    assert_eq!(err.reason(), ferry_proto::Reason::Io);
    assert!(err.to_string().contains("too slow") && err.to_string().contains("KiB/s"), "{err}");
    assert!((0.75..2.0).contains(&secs), "cut after {secs} s");
    assert_eq!(sink.data.len() as u64, *received, "every byte received was kept");
    assert!(sink.data[..] == slow.data[..sink.data.len()]);

    // download_with_retry does not ask the slow mirror again: one request.
    let mut other = MemSink::default();
    let err = f.download_with_retry(&quick_retries(), &url, size as u64, Resume::default(), &mut other).await;
    assert!(err.is_err_and(|e| e.is_too_slow()));
    assert_eq!(slow.requests(), 2);

    let good = PayloadServer::new(payload(size), Behaviour::default());
    let good_url = good.start().await;
    f.download(&good_url, size as u64, sink.resume(), &mut sink).await.expect("resumed elsewhere");
    assert!(sink.data == good.data);
}

/// A mirror that sends a little and hangs up, again and again, makes "progress" every time;
/// below the minimum rate that progress does not renew the retry budget.
#[tokio::test]
async fn trickling_reconnects_do_not_count_as_progress() {
    let size = 200 * KIB;
    let behaviour =
        Behaviour { drop_every: Some(KIB), trickle: Some((KIB, Duration::from_millis(200))), ..Behaviour::default() };
    let server = PayloadServer::new(payload(size), behaviour);
    let url = server.start().await;
    let floor = MinRate { bytes_per_sec: 40 * KIB as u64, window: Duration::from_secs(10) };
    let f = fetcher(FetchConfig { min_rate: Some(floor), ..cfg() });
    let mut sink = MemSink::default();
    let err = f
        .download_with_retry(&quick_retries(), &url, size as u64, Resume::default(), &mut sink)
        .await
        .expect_err("runs out of attempts");
    assert!(err.is_transient() && !err.is_too_slow(), "{err}");
    assert_eq!(server.requests(), 3, "three attempts, none of them progress at the floor");
    assert_eq!(sink.data.len(), 3 * KIB, "what arrived is kept");

    // Without a floor each of those attempts is progress, and the download goes on.
    let f = fetcher(FetchConfig { min_rate: None, ..cfg() });
    let mut sink = MemSink::default();
    let policy = RetryPolicy { max_attempts: 3, ..quick_retries() };
    let err = tokio::time::timeout(
        Duration::from_secs(2),
        f.download_with_retry(&policy, &url, size as u64, Resume::default(), &mut sink),
    )
    .await;
    assert!(err.is_err(), "still downloading after 2 s");
    assert!(sink.data.len() > 3 * KIB, "{} bytes", sink.data.len());
}

/// Under a rate cap the floor is at most half the cap: pacing never trips it.
#[tokio::test]
async fn the_floor_stays_below_the_rate_cap() {
    let size = 150 * KIB;
    let server = PayloadServer::new(payload(size), Behaviour::default());
    let url = server.start().await;
    let floor = MinRate { bytes_per_sec: MIB as u64, window: Duration::from_millis(300) };
    let f = fetcher(FetchConfig { rate_limit: Some(100 * KIB as u64), min_rate: Some(floor), ..cfg() });
    assert_eq!(f.min_rate().map(|m| m.bytes_per_sec), Some(50 * KIB as u64));
    let mut sink = MemSink::default();
    f.download(&url, size as u64, Resume::default(), &mut sink).await.expect("paced, not cut");
    assert!(sink.data == server.data);
}

#[tokio::test]
async fn inconsistent_content_range_is_refused() {
    let size = 200 * KIB;
    let behaviour = Behaviour { skew_content_range: 1, ..Behaviour::default() };
    let server = PayloadServer::new(payload(size), behaviour);
    let url = server.start().await;
    let mut sink =
        MemSink { data: server.data[..1000].to_vec(), validator: Some("\"v1\"".into()), ..MemSink::default() };
    let err = fetcher(cfg()).download(&url, size as u64, sink.resume(), &mut sink).await.expect_err("refused");
    assert!(matches!(err, FetchError::BadResponse { .. }), "{err}");
    assert!(!err.is_transient());
    assert_eq!(sink.data.len(), 1000);
}

#[tokio::test]
async fn complete_or_missing_payloads() {
    let server = PayloadServer::new(payload(1000), Behaviour::default());
    let url = server.start().await;
    let f = fetcher(cfg());
    let mut sink = MemSink { data: server.data.clone(), ..MemSink::default() };
    let outcome = f.download(&url, 1000, sink.resume(), &mut sink).await.expect("nothing to do");
    assert_eq!(outcome.bytes_received, 0);
    assert_eq!(server.requests(), 0);

    // A stored prefix longer than the size is discarded.
    sink.data.extend_from_slice(b"junk");
    let outcome = f.download(&url, 1000, sink.resume(), &mut sink).await.expect("redownload");
    assert!(outcome.restarted);
    assert!(sink.data == server.data);

    let gone = super::serve(axum::Router::new()).await.join("payloads/x.ferry").expect("url");
    let err = f.download(&gone, 1000, Resume::default(), &mut MemSink::default()).await.expect_err("404");
    assert!(matches!(err, FetchError::Status { status, .. } if status == 404), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn download_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let f = fetcher(cfg());
    let url = url::Url::parse("http://127.0.0.1:9/").expect("url");
    let mut sink = MemSink::default();
    is_send(&f.download(&url, 1, Resume::default(), &mut sink));
    is_send(&f.get_optional(&url, 1));
    is_send(&crate::fetch::with_backoff(&RetryPolicy::default(), "x", || f.get_optional(&url, 1)));
}

#[tokio::test]
async fn a_region_after_a_header_is_fetched_with_and_without_range_support() {
    // The payload of a `.ferry` file starts after its header: only bytes [start, start + size).
    let (start, size) = (1000usize, MIB + 77);
    for ignore_range in [false, true] {
        let behaviour =
            Behaviour { ignore_range, drop_every: Some(300 * KIB), drop_first_only: true, ..Behaviour::default() };
        let server = PayloadServer::new(payload(start + size), behaviour);
        let url = server.start().await;
        let f = fetcher(cfg());
        let mut sink = MemSink::default();
        let resume = |s: &MemSink| Resume { start: start as u64, ..s.resume() };
        let _ = f.download(&url, size as u64, resume(&sink), &mut sink).await;
        f.download(&url, size as u64, resume(&sink), &mut sink).await.expect("second call completes");
        assert!(sink.data == server.data[start..], "ignore_range {ignore_range}: region differs");
    }
}
