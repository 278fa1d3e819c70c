//! `bundler serve`: one small HTTP/1.1 server for a site without a CDN. It serves a mirror
//! directory read-only ([`files`]: layout paths only, strong ETags, conditional and range
//! requests, cache headers that let a CDN in front keep content-addressed files forever)
//! and accepts signed report batches from devices ([`reports`]: `POST /v1/reports`, the
//! same ingest as `bundler reports import`), and shows the fleet database as a small
//! server-rendered dashboard ([`dashboard`]: `GET /` and `GET /devices/<id>`, no scripts).
//!
//! Plain HTTP: everything it serves is signed and verified by devices, and reports are
//! signed by each device's key; put a TLS terminator in front where status must stay
//! private. The bound address is printed on stdout (`listening on http://ADDR`), so
//! `--listen 127.0.0.1:0` works for tests and scripts. SIGTERM or SIGINT stops accepting,
//! lets requests in flight finish for up to [`DRAIN`], then exits 0. SQLite work runs on
//! the blocking pool; a batch is one transaction, so a `kill -9` loses at most the batch in
//! flight, which the device sends again (it was never acknowledged).

mod dashboard;
mod files;
mod html;
mod reports;

use anyhow::{bail, Context, Result};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fleetdb::FleetDb;

/// How long requests in flight may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

/// `bundler serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Mirror directory to serve read-only (omit to accept reports only).
    #[arg(long)]
    mirror: Option<PathBuf>,
    /// Fleet database for reports (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Address to listen on; port 0 picks a free one (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Enroll an unknown device with the key its first valid batch is signed with
    /// (otherwise only devices enrolled with `bundler devices enroll` may report).
    #[arg(long)]
    enroll_on_first_use: bool,
}

/// What the handlers share.
pub(crate) struct AppState {
    mirror: Option<files::MirrorFiles>,
    db: Mutex<FleetDb>,
    enroll_on_first_use: bool,
}

/// Runs `bundler serve` until SIGTERM or SIGINT.
pub fn run(args: &ServeArgs) -> Result<()> {
    let mirror = match &args.mirror {
        Some(dir) => {
            let root = std::fs::canonicalize(dir).with_context(|| format!("mirror directory {}", dir.display()))?;
            if !root.is_dir() {
                bail!("mirror {} is not a directory", dir.display());
            }
            Some(files::MirrorFiles::new(root))
        }
        None => None,
    };
    let db = FleetDb::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    let state = Arc::new(AppState { mirror, db: Mutex::new(db), enroll_on_first_use: args.enroll_on_first_use });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(serve(state, args.listen))
}

fn router(state: Arc<AppState>) -> Router {
    // Mirror layout paths (trust/, channels/, releases/, payloads/) never collide with
    // the dashboard's `/` and `/devices/…`.
    Router::new()
        .route("/v1/reports", post(reports::post))
        .route("/", get(dashboard::fleet))
        .route("/devices/{id}", get(dashboard::device))
        .fallback(files::get)
        .with_state(state)
}

async fn serve(state: Arc<AppState>, listen: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let mirror = state.mirror.as_ref().map(|m| m.root().display().to_string());
    println!("listening on http://{local}");
    std::io::stdout().flush()?;
    tracing::info!(address = %local, mirror = mirror.as_deref().unwrap_or("-"), enroll_on_first_use = state.enroll_on_first_use, "serving");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tokio::select! {
        result = &mut server => {
            result.context("the server task failed")?.context("serving")?;
            bail!("the server stopped on its own");
        }
        signal = shutdown_signal() => {
            tracing::info!(signal = signal?, "stopping: no new connections, draining requests in flight");
        }
    }
    let _ = stop.send(());
    match tokio::time::timeout(DRAIN, server).await {
        Ok(joined) => joined.context("the server task failed")?.context("serving")?,
        Err(_) => tracing::warn!(drain = ?DRAIN, "requests still in flight after the drain timeout; closing them"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn shutdown_signal() -> Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// A JSON response.
fn json_response(status: u16, body: serde_json::Value) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], format!("{body}\n"))
        .into_response()
}
