//! Small documents: conditional GET, absent documents, caps, redirects, header timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{cfg, fetcher, serve};
use crate::fetch::{Conditional, FetchConfig, FetchError};

async fn index(headers: HeaderMap) -> Response {
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"v1\"") {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    ([(header::ETAG, "\"v1\"")], "index-v1").into_response()
}

#[tokio::test]
async fn conditional_get_uses_the_etag() {
    let base = serve(Router::new().route("/channels/stable/index", get(index))).await;
    let url = base.join("channels/stable/index").expect("url");
    let f = fetcher(cfg());
    let first = f.get_conditional(&url, None, 1024).await.expect("first poll");
    assert_eq!(first, Conditional::Body { bytes: b"index-v1".to_vec(), etag: Some("\"v1\"".into()) });
    assert_eq!(f.get_conditional(&url, Some("\"v1\""), 1024).await.expect("poll"), Conditional::NotModified);
    let stale = f.get_conditional(&url, Some("\"v0\""), 1024).await.expect("poll");
    assert!(matches!(stale, Conditional::Body { .. }));
}

#[tokio::test]
async fn absent_documents_are_none_and_forbidden_is_an_error() {
    let app = Router::new()
        .route("/trust/root.1", get(|| async { "root-1" }))
        .route("/trust/root.3", get(|| async { StatusCode::FORBIDDEN }))
        .route("/trust/root.4", get(|| async { StatusCode::BAD_GATEWAY }));
    let base = serve(app).await;
    let f = fetcher(cfg());
    let get = |n: u32| {
        let url = base.join(&format!("trust/root.{n}")).expect("url");
        let f = f.clone();
        async move { f.get_optional(&url, 1024).await }
    };
    assert_eq!(get(1).await.expect("root 1"), Some(b"root-1".to_vec()));
    assert_eq!(get(2).await.expect("root 2"), None);
    let forbidden = get(3).await.expect_err("403");
    assert!(!forbidden.is_transient(), "{forbidden}");
    assert!(get(4).await.expect_err("502").is_transient());
}

/// A body of `total` bytes in 64 KiB pieces, made as it is sent; counts what was sent.
fn endless(total: u64, sent: Arc<AtomicU64>) -> Body {
    static PIECE: [u8; 65_536] = [7; 65_536];
    let stream = futures_util::stream::unfold(0u64, move |pos| {
        let sent = sent.clone();
        async move {
            (pos < total).then(|| {
                sent.fetch_add(PIECE.len() as u64, Ordering::SeqCst);
                (Ok::<_, std::io::Error>(Bytes::from_static(&PIECE)), pos + PIECE.len() as u64)
            })
        }
    });
    Body::from_stream(stream)
}

#[tokio::test]
async fn caps_are_counted_not_announced() {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let app = Router::new()
        .route("/honest", get(|| async { vec![1u8; 10_000] }))
        .route("/chunked", get(move || async move { endless(256 << 20, counter) }));
    let base = serve(app).await;
    let f = fetcher(cfg());

    let honest = base.join("honest").expect("url");
    let err = f.get_optional(&honest, 9_999).await.expect_err("over the cap");
    assert!(matches!(err, FetchError::SizeExceeded { limit: 9_999, .. }), "{err}");
    assert!(!err.is_transient());
    assert_eq!(f.get_optional(&honest, 10_000).await.expect("at the cap").map(|b| b.len()), Some(10_000));

    // No length announced: 256 MiB on offer, refused once 100 000 bytes are passed.
    let start = Instant::now();
    let err = f.get_optional(&base.join("chunked").expect("url"), 100_000).await.expect_err("over the cap");
    assert!(matches!(err, FetchError::SizeExceeded { limit: 100_000, .. }), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let served = sent.load(Ordering::SeqCst);
    assert!(served < 32 << 20, "server sent {served} bytes: the client kept reading");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// One raw HTTP response on every connection, then close.
async fn raw_server(response: Vec<u8>) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(&response).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url::Url::parse(&format!("http://{addr}/doc")).expect("url")
}

#[tokio::test]
async fn lying_lengths_cannot_pass_the_cap() {
    let f = fetcher(cfg());
    let big = vec![b'x'; 1 << 20];

    // Close-delimited body, no length at all.
    let mut resp = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    resp.extend_from_slice(&big);
    let err = f.get_optional(&raw_server(resp).await, 65_536).await.expect_err("over the cap");
    assert!(matches!(err, FetchError::SizeExceeded { .. }), "{err}");

    // Announces 10 bytes, sends a megabyte: framing takes 10, the rest is never read.
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n".to_vec();
    resp.extend_from_slice(&big);
    assert_eq!(f.get_optional(&raw_server(resp).await, 65_536).await.expect("10 bytes"), Some(vec![b'x'; 10]));

    // Announces 10 bytes and chunked framing, sends a megabyte in chunks: hyper frames by
    // Transfer-Encoding (RFC 9112 §6.3), so the count is what refuses it.
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in big.chunks(8192) {
        resp.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        resp.extend_from_slice(piece);
        resp.extend_from_slice(b"\r\n");
    }
    resp.extend_from_slice(b"0\r\n\r\n");
    let err = f.get_optional(&raw_server(resp).await, 65_536).await.expect_err("over the cap");
    assert!(matches!(err, FetchError::SizeExceeded { .. }), "{err}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = url::Url::parse(&format!("http://{}/index", listener.local_addr().expect("addr"))).expect("url");
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            conns.push(conn); // accepted, never answered
        }
    });
    let f = fetcher(FetchConfig {
        connect_timeout: Duration::from_millis(200),
        stall_timeout: Duration::from_millis(300),
        ..cfg()
    });
    let start = Instant::now();
    let err = f.get_conditional(&url, None, 1024).await.expect_err("silent");
    let secs = start.elapsed().as_secs_f64();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
    assert!((0.45..1.5).contains(&secs), "timed out after {secs} s");
    held.abort();
}

#[tokio::test]
async fn redirects_are_limited_and_never_leave_http() {
    let app = Router::new()
        .route(
            "/r/{n}",
            get(|Path(n): Path<u32>| async move {
                match n {
                    0 => "landed".into_response(),
                    n => Redirect::temporary(&format!("/r/{}", n - 1)).into_response(),
                }
            }),
        )
        .route("/ftp", get(|| async { Redirect::temporary("ftp://127.0.0.1/x") }));
    let base = serve(app).await;
    let f = fetcher(cfg());
    let got = f.get_optional(&base.join("r/5").expect("url"), 64).await.expect("5 redirects");
    assert_eq!(got, Some(b"landed".to_vec()));
    let err = f.get_optional(&base.join("r/6").expect("url"), 64).await.expect_err("6 redirects");
    assert!(matches!(err, FetchError::Redirect { .. }), "{err}");
    assert!(!err.is_transient());
    let err = f.get_optional(&base.join("ftp").expect("url"), 64).await.expect_err("ftp");
    assert!(!err.is_transient(), "{err}");
}

#[tokio::test]
async fn unreachable_mirror_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = url::Url::parse(&format!("http://{addr}/index")).expect("url");
    let err = fetcher(cfg()).get_optional(&url, 64).await.expect_err("refused");
    assert!(matches!(err, FetchError::Connect { .. }), "{err}");
    assert!(err.is_transient());
    assert_eq!(err.reason(), ferry_proto::Reason::Io);
}
