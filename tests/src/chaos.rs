//! A chaos HTTP mirror for the agent daemon's end-to-end tests: it serves a Ferry mirror
//! directory (`trust/root.<n>`, `channels/<ch>/index`, `releases/<sha>.manifest`,
//! `payloads/<sha>.ferry`) over real sockets on `127.0.0.1`, correctly unless a [`Schedule`]
//! says otherwise, and counts what it sent so tests can assert on it.
//!
//! Correct behaviour: `GET` and `HEAD`; a strong `ETag` (quoted SHA-256 of the content);
//! `If-None-Match` → 304; `Range: bytes=N-`, `bytes=N-M`, `bytes=-S` → 206 with
//! `Content-Range` (unsatisfiable → 416, several ranges → the whole file); `If-Range` with
//! anything but the current ETag → the whole file; 404 for a missing file; `Content-Length`
//! always; keep-alive.
//!
//! Faults ([`Fault`]) are chosen per request by a [`Schedule`]: rules that match a path
//! prefix or glob and fire always, on the first n requests, after n, on listed or every
//! n-th requests, or at random from a seeded splitmix64 (a pure function of seed, rule and
//! request count, so a seed fixes the sequence; never the wall clock):
//! * [`Fault::DropAfter`]: `n` body bytes, then the connection is reset (RST), like a link
//!   that drops; [`Fault::Truncate`]: `n` body bytes under the full `Content-Length`, then
//!   an orderly close (FIN), like a server that dies. Bodies of `n` bytes or fewer pass.
//! * [`Fault::Stall`]: `after` bytes, then nothing (connection open) for `pause`, then the
//!   rest; [`Fault::Trickle`]: the body at `bytes_per_sec`.
//! * [`Fault::WrongContentLength`]: `Content-Length` off by `delta`, the real body, close.
//! * [`Fault::Endless`]: 200 without `Content-Length`, the file's bytes repeated until the
//!   client leaves (or [`ENDLESS_SAFETY_CAP`]), even for a file that does not exist.
//! * [`Fault::Status`]: 500/503/429/… with an optional `Retry-After`, empty body.
//! * [`Fault::DifferentBody`]: other bytes under the same URL (the file's bytes inverted, or
//!   another file's, which works even for a path that does not exist), with its own ETag or
//!   the real file's (the splice a resume with `If-Range` must catch).
//! * [`Fault::IgnoreRange`]: 200 with the whole body whatever `Range` says.
//!
//! A fault that shapes the body always sends one: `If-None-Match` is ignored under it, so a
//! poll cannot dodge it with a 304. Status bodies and 404s are empty, so byte counters only
//! count mirror content.
//!
//! Tests run synchronously: [`ChaosServer::start`] binds port 0 and runs its own tokio
//! runtime on a background thread; [`ChaosServer::url`] goes into the device's config;
//! [`ChaosServer::set_schedule`] and [`ChaosServer::set_dir`] change faults or content
//! while the agent runs (a frozen index, another channel's index, then the fix); counters
//! ([`ChaosServer::bytes_served_for`], [`ChaosServer::requests_for`]) and the
//! [`ChaosServer::log`] say what the agent asked for and got. Dropping the server stops it
//! and cuts every open connection.
//!
//! ```no_run
//! use ferry_tests::chaos::{ChaosServer, Fault, Schedule};
//! # let mirror = std::path::Path::new("mirror");
//! // Payload downloads drop every 64 KiB; the first two index polls get 503, Retry-After 1.
//! let schedule = Schedule::seeded(7)
//!     .always("payloads/", Fault::DropAfter(64 << 10))
//!     .first("channels/", 2, Fault::retry_after(503, 1));
//! let server = ChaosServer::start(mirror, schedule);
//! let config = format!("mirrors = [\"{}\"]\n", server.url());
//! // … run the agent with `config` until it applies the release, then:
//! assert!(server.bytes_served_for("payloads/") < 2 * 1_000_000, "resumes, never restarts");
//! server.set_schedule(Schedule::clean());
//! ```

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

mod conn;
mod schedule;

pub use schedule::{Schedule, When};

/// An `Endless` body stops (closing the connection) once it has sent this many bytes,
/// rounded up to a whole write, so that a client without a byte cap fails its test instead
/// of filling the disk.
pub const ENDLESS_SAFETY_CAP: u64 = 256 << 20;

/// What goes wrong with one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Send this many body bytes, give the client 100 ms to read them (a link delivers
    /// what crossed it before it drops), then reset the connection. Bytes still in the
    /// server's send buffer when the reset goes out are lost, so a client that does not
    /// read in time sees fewer.
    DropAfter(u64),
    /// Send this many body bytes under the full `Content-Length`, then close (FIN).
    Truncate(u64),
    /// Send `after` body bytes, then nothing for `pause` (connection open), then the rest.
    Stall {
        /// Bytes sent before the pause.
        after: u64,
        /// How long nothing is sent.
        pause: Duration,
    },
    /// Send the body at this rate (at least one byte per write).
    Trickle {
        /// Bytes per second.
        bytes_per_sec: u64,
    },
    /// Advertise `Content-Length` = real length + delta (at least 0), send the real body,
    /// then close.
    WrongContentLength(i64),
    /// 200 without `Content-Length` and a body that repeats the file's bytes until the
    /// client disconnects.
    Endless,
    /// Answer with this status and an empty body.
    Status {
        /// The status code (500, 503, 429, …).
        code: u16,
        /// `Retry-After` in seconds, if any.
        retry_after: Option<u64>,
    },
    /// Serve other bytes under the same URL: `from` another mirror file (relative path),
    /// or the file's own bytes inverted when `None`. `same_etag` keeps the real file's
    /// ETag (the one an `If-Range` resume would send); otherwise the substitute's.
    DifferentBody {
        /// The mirror file whose content is served instead.
        from: Option<String>,
        /// Whether to advertise the real file's ETag.
        same_etag: bool,
    },
    /// Answer 200 with the whole body, whatever `Range` says.
    IgnoreRange,
}

impl Fault {
    /// `Status` without `Retry-After`.
    pub fn status(code: u16) -> Fault {
        Fault::Status { code, retry_after: None }
    }

    /// `Status` with `Retry-After: secs`.
    pub fn retry_after(code: u16, secs: u64) -> Fault {
        Fault::Status { code, retry_after: Some(secs) }
    }

    /// Whether the fault shapes a body, so that one is sent even when `If-None-Match`
    /// matches.
    fn shapes_body(&self) -> bool {
        !matches!(self, Fault::Status { .. })
    }
}

/// One answered request, in the order responses finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path relative to the mirror, e.g. `channels/stable/index`.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// The fault the schedule chose, if any.
    pub fault: Option<Fault>,
    /// Body bytes written to the socket.
    pub bytes: u64,
    /// Whether the client went away (a write failed or it closed) before the server was done.
    pub client_gone: bool,
}

/// A running chaos mirror. Dropping it stops the server and closes every connection.
pub struct ChaosServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ChaosServer {
    /// Serves `dir` on a fresh loopback port with `schedule`.
    pub fn start(dir: impl Into<PathBuf>, schedule: Schedule) -> ChaosServer {
        let listener = StdListener::bind("127.0.0.1:0").expect("binding a loopback port for the chaos mirror");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                dir: dir.into(),
                schedule,
                seen: Vec::new(),
                bytes: BTreeMap::new(),
                requests: BTreeMap::new(),
                log: Vec::new(),
            }),
            total: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("chaos-mirror-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the chaos mirror");
                rt.block_on(conn::accept_loop(listener, for_thread, stopped));
                // Dropping the tasks closes their sockets; file reads finish quickly.
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawning the chaos mirror thread");
        ChaosServer { addr, shared, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the schedule; the new one starts counting requests from zero.
    pub fn set_schedule(&self, schedule: Schedule) {
        let mut st = self.shared.lock();
        st.schedule = schedule;
        st.seen.clear();
    }

    /// Serves another directory from the next request on.
    pub fn set_dir(&self, dir: impl Into<PathBuf>) {
        self.shared.lock().dir = dir.into();
    }

    /// The directory being served.
    pub fn dir(&self) -> PathBuf {
        self.shared.lock().dir.clone()
    }

    /// Body bytes written to sockets, all paths together.
    pub fn bytes_served(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Body bytes written for paths matching `pattern` (a prefix, or a glob as in
    /// [`Schedule::rule`]).
    pub fn bytes_served_for(&self, pattern: &str) -> u64 {
        sum_matching(&self.shared.lock().bytes, pattern)
    }

    /// Requests received (all paths, including ones answered 400 or 404).
    pub fn requests(&self) -> u64 {
        self.shared.lock().requests.values().sum()
    }

    /// Requests received for paths matching `pattern`.
    pub fn requests_for(&self, pattern: &str) -> u64 {
        sum_matching(&self.shared.lock().requests, pattern)
    }

    /// Per-path request counts.
    pub fn requests_by_path(&self) -> BTreeMap<String, u64> {
        self.shared.lock().requests.clone()
    }

    /// Every finished response so far.
    pub fn log(&self) -> Vec<Served> {
        self.shared.lock().log.clone()
    }

    /// Responses being sent right now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no response is being sent, at most `timeout`; whether that happened.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Zeroes the byte and request counters and empties the log (schedule counts stay).
    pub fn reset_counters(&self) {
        let mut st = self.shared.lock();
        st.bytes.clear();
        st.requests.clear();
        st.log.clear();
        self.shared.total.store(0, Ordering::SeqCst);
    }
}

impl Drop for ChaosServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sum_matching(map: &BTreeMap<String, u64>, pattern: &str) -> u64 {
    map.iter().filter(|(path, _)| schedule::matches(pattern, path)).map(|(_, n)| n).sum()
}

/// State shared between the handle and the connections.
struct Shared {
    state: Mutex<State>,
    total: AtomicU64,
    in_flight: AtomicU64,
}

struct State {
    dir: PathBuf,
    schedule: Schedule,
    /// Requests each schedule rule has counted.
    seen: Vec<u64>,
    bytes: BTreeMap<String, u64>,
    requests: BTreeMap<String, u64>,
    log: Vec<Served>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request to `path` and decides its fault; returns the directory to serve
    /// it from and the fault.
    fn begin(&self, path: &str) -> (PathBuf, Option<Fault>) {
        let mut st = self.lock();
        *st.requests.entry(path.to_string()).or_default() += 1;
        let State { schedule, seen, dir, .. } = &mut *st;
        let fault = schedule.decide(seen, path);
        (dir.clone(), fault)
    }

    fn add_bytes(&self, path: &str, n: u64) {
        self.total.fetch_add(n, Ordering::SeqCst);
        *self.lock().bytes.entry(path.to_string()).or_default() += n;
    }

    fn finish(&self, served: Served) {
        self.lock().log.push(served);
    }
}

/// Reads a mirror file off the executor; `None` when it is missing or unreadable (or the
/// path would leave the directory, which request parsing already refuses).
async fn read_file(dir: &Path, rel: &str) -> Option<Vec<u8>> {
    let path = dir.join(rel);
    tokio::task::spawn_blocking(move || std::fs::read(path).ok()).await.ok().flatten()
}
