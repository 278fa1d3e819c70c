//! Upload tests against a report server on 127.0.0.1 that answers as told.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ferry_proto::report::ReportBatch;
use ferry_proto::Limits;

use super::*;
use crate::fetch::FetchConfig;

/// How the test server answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `200 {"acked": <last seq>}`.
    AckAll,
    /// `200 {"acked": min(n, last seq)}`.
    AckUpTo(u64),
    /// `409 {"error": "replay", "acked": n}`.
    Replay(u64),
    /// `413` for batches of more than n records, else as `AckAll`.
    TooLargeAbove(usize),
    /// This status with `{"error": "..."}`.
    Refuse(u16),
}

#[derive(Debug)]
struct Server {
    mode: Mode,
    /// (first seq, last seq, records) of every batch received.
    received: Vec<(u64, u64, usize)>,
}

async fn handle(State(s): State<Arc<Mutex<Server>>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    assert_eq!(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some(CONTENT_TYPE));
    let envelope = zstd::decode_all(&body[..]).expect("zstd body");
    let peek = ReportBatch::peek(&envelope, &Limits::default()).expect("peek");
    let batch = ReportBatch::verify(&envelope, &peek.device_key, &Limits::default()).expect("signed");
    let mut s = s.lock().expect("lock");
    let first = batch.records.first().map_or(0, |r| r.seq);
    s.received.push((first, batch.last_seq(), batch.records.len()));
    let ok = |n: u64| (StatusCode::OK, format!("{{\"acked\": {n}}}"));
    match s.mode {
        Mode::AckAll => ok(batch.last_seq()),
        Mode::AckUpTo(n) => ok(n.min(batch.last_seq())),
        Mode::Replay(n) => (StatusCode::CONFLICT, format!("{{\"error\": \"replay\", \"acked\": {n}}}")),
        Mode::TooLargeAbove(n) if batch.records.len() > n => (StatusCode::PAYLOAD_TOO_LARGE, "{}".into()),
        Mode::TooLargeAbove(_) => ok(batch.last_seq()),
        Mode::Refuse(code) => {
            (StatusCode::from_u16(code).expect("status"), "{\"error\": \"unknown device key\"}".into())
        }
    }
}

struct World {
    _dir: tempfile::TempDir,
    cfg: Config,
    fetch: Fetcher,
    server: Arc<Mutex<Server>>,
    url: Url,
}

async fn world(mode: Mode) -> World {
    let server = Arc::new(Mutex::new(Server { mode, received: Vec::new() }));
    let app = Router::new().route("/v1/reports", post(handle)).with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = Url::parse(&format!("http://{addr}/v1/reports")).expect("url");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "channel = \"stable\"\ntrust_root = \"root.1\"\nstate_dir = \"{}\"\ndevice_id = \"pump-17\"\n\
         [fetch]\nmax_backoff = \"1s\"\n[reports]\nurl = \"{url}\"\n",
        dir.path().join("state").display()
    );
    let cfg = Config::parse(&text, Path::new("/etc/ferry/agent.toml")).expect("config");
    std::fs::create_dir_all(&cfg.state_dir).expect("mkdir");
    let fetch = Fetcher::build(&FetchConfig::default(), false).expect("fetcher");
    World { _dir: dir, cfg, fetch, server, url }
}

impl World {
    fn store(&self) -> Store {
        Store::open(&self.cfg.state_dir).expect("store")
    }

    fn events(&self, n: usize) {
        let store = self.store();
        for i in 0..n {
            store.record_event("fetched", Some(i as u64), None, "ok").expect("event");
        }
    }

    fn pending(&self) -> (u64, Option<u64>) {
        let state = Outbox::new(&self.store()).state().expect("state");
        (state.records, state.first_seq)
    }

    fn received(&self) -> Vec<(u64, u64, usize)> {
        std::mem::take(&mut self.server.lock().expect("lock").received)
    }

    fn set_mode(&self, mode: Mode) {
        self.server.lock().expect("lock").mode = mode;
    }
}

#[tokio::test]
async fn acknowledged_records_go_and_the_rest_is_sent_again() {
    let w = world(Mode::AckUpTo(700)).await;
    w.events(1200);
    let out = upload(&w.cfg, &w.fetch, &w.url).await;
    // 1-500 acked, 501-1000 acked through 700, then 701-1200 acked through 700: no progress.
    assert_eq!(w.received(), vec![(1, 500, 500), (501, 1000, 500), (701, 1200, 500)]);
    assert_eq!((out.batches, out.removed, out.acked), (3, 700, Some(700)));
    assert!(matches!(out.error, Some(UploadError::BadAnswer { .. })), "{:?}", out.error);
    assert_eq!(w.pending(), (500, Some(701)), "exactly the records up to 700 are gone");

    w.set_mode(Mode::AckAll);
    let out = upload(&w.cfg, &w.fetch, &w.url).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(w.received(), vec![(701, 1200, 500)]);
    assert_eq!(w.pending(), (0, None));
    let out = upload(&w.cfg, &w.fetch, &w.url).await;
    assert_eq!((out.batches, w.received().len()), (0, 0), "an empty outbox sends nothing");
}

#[tokio::test]
async fn a_replay_answer_also_removes_what_the_server_holds() {
    let w = world(Mode::Replay(3)).await;
    w.events(5);
    let out = upload(&w.cfg, &w.fetch, &w.url).await;
    assert_eq!(out.removed, 3);
    assert_eq!(w.pending(), (2, Some(4)));
    assert_eq!(w.received(), vec![(1, 5, 5), (4, 5, 2)], "then no progress: the pass ends");
}

#[tokio::test]
async fn refusals_keep_everything_and_record_nothing() {
    for code in [401, 403, 400] {
        let w = world(Mode::Refuse(code)).await;
        w.events(3);
        let out = upload(&w.cfg, &w.fetch, &w.url).await;
        match &out.error {
            Some(UploadError::Refused { status, detail, .. }) => {
                assert_eq!(status.as_u16(), code);
                assert!(detail.contains("unknown device key"), "{detail}");
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_eq!(w.received().len(), 1, "{code}: refusals are not retried");
        assert_eq!(w.pending(), (3, Some(1)), "{code}: nothing removed, nothing recorded");
    }
}

#[tokio::test]
async fn too_large_batches_are_halved() {
    let w = world(Mode::TooLargeAbove(100)).await;
    w.events(300);
    let out = upload(&w.cfg, &w.fetch, &w.url).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let received = w.received();
    assert_eq!(received[..4], [(1, 300, 300), (1, 150, 150), (1, 75, 75), (76, 300, 225)]);
    assert_eq!(w.pending(), (0, None));
    assert!(w.store().setting("outbox.sent").expect("q").is_some());
}

#[tokio::test]
async fn after_cycle_makes_the_identity_and_uploads_when_due() {
    let w = world(Mode::AckAll).await;
    w.events(2);
    after_cycle(&w.cfg, &w.fetch, false).await;
    assert!(w.cfg.state_dir.join(crate::identity::IDENTITY_FILE).exists());
    assert_eq!(w.received().len(), 1, "the first pass is due");
    w.events(1);
    after_cycle(&w.cfg, &w.fetch, false).await;
    assert_eq!(w.received().len(), 0, "not again within the interval");
    after_cycle(&w.cfg, &w.fetch, true).await;
    assert_eq!(w.received(), vec![(3, 3, 1)], "forced (run --once)");

    // Unreachable server: the records stay, no event is added.
    let dead = Url::parse("http://127.0.0.1:9/v1/reports").expect("url");
    w.events(1);
    let out = upload(&w.cfg, &w.fetch, &dead).await;
    assert!(matches!(out.error, Some(UploadError::Fetch(_))), "{:?}", out.error);
    assert_eq!(w.pending(), (1, Some(4)));
}
