//! `bench-resume`: how many bytes a device pulls from a mirror, per payload byte, when the
//! link drops every 64 KiB or every 1 MiB, written into `BENCHMARKS.md`.
//!
//! It publishes an incompressible release of at least 50 MB (random files, from a seed)
//! with the real `bundler`, serves it from the chaos mirror with `DropAfter(n)` on every
//! payload response (n body bytes, then a TCP reset), and runs the real
//! `ferry-agent run --once` (by default the debug build with failpoints that the end-to-end
//! tests use, `target/e2e/debug/ferry-agent`; `--agent` picks another) until it converges. The figure is the chaos mirror's payload bytes ÷ the payload size.
//! For comparison, a client without resume (a plain `GET` from byte 0 each time) makes a
//! bounded number of attempts against the same mirror: it never finishes.
//!
//! A benchmark, not a test: it reports the goal (≤ 1.02) and does not fail on it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferry_tests::chaos::{ChaosServer, Fault, Schedule};
use ferry_tests::fixture::{Device, Operator};
use ferry_tests::service::{publish_random_release, Daemon};
use ferry_tests::{bench_md, binaries, workspace_root};

const HEADING: &str = "## Resume efficiency";
const GOAL: f64 = 1.02;

/// Measures bytes served ÷ payload size for a device resuming over a link that drops
/// every 64 KiB and every 1 MiB, against a client without resume, and writes the table
/// into BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "bench-resume", max_term_width = 100)]
struct Args {
    /// Random content in the release, in MiB (the payload is a little larger).
    #[arg(long, default_value_t = 50)]
    mib: usize,
    /// Seed of the random content.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Attempts the client without resume gets.
    #[arg(long, default_value_t = 20)]
    attempts: u32,
    /// Runs of each scenario whose drop interval is at least 1 MiB: what such a drop loses
    /// in flight varies with load (smaller drops fit the receiver's socket buffer).
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// `run --once` invocations allowed before a scenario counts as not converged.
    #[arg(long, default_value_t = 5)]
    max_runs: u32,
    /// Agent binaries to run (default: the end-to-end tests' debug build, and
    /// target/release/ferry-agent when it exists).
    #[arg(long)]
    agent: Vec<PathBuf>,
    /// Drop intervals to run the device through, in bytes (0: a link that never drops).
    #[arg(long, value_delimiter = ',', default_value = "0,1048576,65536")]
    drops: Vec<u64>,
    /// Where to write the section.
    #[arg(long, default_value_os_t = workspace_root().join("BENCHMARKS.md"))]
    out: PathBuf,
    /// Print the section only; leave BENCHMARKS.md alone.
    #[arg(long)]
    dry_run: bool,
}

/// One device scenario.
struct Resumed {
    build: &'static str,
    /// `ferry_download_bytes_total`: payload bytes the device committed, all attempts.
    committed: u64,
    drop_every: Option<u64>,
    served: u64,
    requests: u64,
    runs: u32,
    converged: bool,
    wall: Duration,
    /// Interrupted attempts, from the agent's log.
    interrupted: u64,
    /// Interrupted attempts that committed nothing.
    fruitless: u64,
}

/// The client without resume against one scenario.
struct Restarting {
    drop_every: u64,
    attempts: u32,
    completed: u32,
    received: u64,
    served: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-resume: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let t = Instant::now();
    let op = Operator::new();
    publish_random_release(&op, "stable", args.mib << 20, args.seed, "bench");
    let (payload_rel, size, file_len) = full_payload(&op)?;
    eprintln!(
        "published {} MiB of random files: payload {size} bytes ({:.1} MB) in {:.1} s",
        args.mib,
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    if size < 50_000_000 {
        eprintln!("note: the payload is under 50 MB; the stated benchmark asks for at least 50 MB");
    }

    let cost = request_cost(&op, &payload_rel)?;
    eprintln!("one request costs the chaos mirror {:.0} ms", cost.as_secs_f64() * 1000.0);
    let mut resumed = Vec::new();
    let agents = if args.agent.is_empty() {
        let mut v = vec![binaries().agent.clone()];
        let release = workspace_root().join("target/release/ferry-agent");
        if release.exists() {
            v.push(release);
        }
        v
    } else {
        args.agent.clone()
    };
    for agent in &agents {
        let scenarios = args.drops.iter().flat_map(|&n| {
            let times = if n >= 1 << 20 { args.repeat.max(1) } else { 1 };
            std::iter::repeat_n((n > 0).then_some(n), times as usize)
        });
        for drop_every in scenarios {
            let r = device_scenario(&op, agent, drop_every, args.max_runs)?;
            eprintln!(
                "{} agent, drops every {}: served {} for {size} ({:.4}), {} requests, {} run(s), {:.1} s",
                r.build,
                label(drop_every),
                r.served,
                r.served as f64 / size as f64,
                r.requests,
                r.runs,
                r.wall.as_secs_f64()
            );
            resumed.push(r);
        }
    }
    let mut restarting = Vec::new();
    for drop_every in args.drops.iter().copied().filter(|&n| n > 0) {
        let r = restarting_client(&op, &payload_rel, file_len, drop_every, args.attempts)?;
        eprintln!(
            "no resume, drops every {}: {}/{} completed, {} bytes served",
            label(Some(drop_every)),
            r.completed,
            r.attempts,
            r.served
        );
        restarting.push(r);
    }
    let section = render(&args, size, cost, &resumed, &restarting);
    print!("{section}");
    if !args.dry_run {
        bench_md::update_file(&args.out, HEADING, &section)
            .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!("wrote the {HEADING:?} section of {}", args.out.display());
    }
    Ok(())
}

/// The latest release's full payload: mirror-relative path, signed size, file length.
fn full_payload(op: &Operator) -> Result<(String, u64, u64)> {
    let index = op.inspect(&op.mirror.join("channels/stable/index"));
    let digest = index["document"]["latest"]["manifest_sha256"].as_str().context("index: no manifest digest")?;
    let manifest = op.inspect(&op.mirror.join("releases").join(format!("{digest}.manifest")));
    let p = manifest["document"]["payloads"].as_array().and_then(|a| a.first()).context("manifest: no payload")?;
    let sha = p["sha256"].as_str().context("payload sha256")?;
    let size = p["size"].as_u64().context("payload size")?;
    let rel = format!("payloads/{sha}.ferry");
    let file_len = std::fs::metadata(op.mirror.join(&rel)).with_context(|| rel.clone())?.len();
    Ok((rel, size, file_len))
}

fn label(drop_every: Option<u64>) -> String {
    match drop_every {
        None => "never".into(),
        Some(n) if n.is_multiple_of(1 << 20) => format!("{} MiB", n >> 20),
        Some(n) => format!("{} KiB", n >> 10),
    }
}

/// A fresh device converging through a mirror whose payload responses drop after
/// `drop_every` bytes.
fn device_scenario(op: &Operator, agent: &Path, drop_every: Option<u64>, max_runs: u32) -> Result<Resumed> {
    let schedule = match drop_every {
        Some(n) => Schedule::clean().always("payloads/", Fault::DropAfter(n)),
        None => Schedule::clean(),
    };
    let server = ChaosServer::start(&op.mirror, schedule);
    // Backoff capped at 1 s; after an attempt that made progress the daemon retries at once.
    let dev = Device::new(
        "stable",
        &op.root1(),
        &format!(
            "mirrors = [\"{}\"]\npoll_interval = \"1h\"\nmetrics_file = \"metrics.prom\"\n\
             [fetch]\nmax_backoff = \"1s\"\nstall_timeout = \"10s\"\n",
            server.url()
        ),
    );
    let t = Instant::now();
    let mut runs = 0;
    let mut converged = false;
    let mut log = String::new();
    while runs < max_runs && !converged {
        runs += 1;
        let mut cmd = Command::new(agent);
        cmd.arg("--config").arg(&dev.config).args(["run", "--once"]);
        let mut d = Daemon::spawn(cmd, &[("FERRY_LOG", "info")]);
        let Some(status) = d.wait_exit(Duration::from_secs(1800)) else {
            bail!("run --once did not finish in 30 min:\n{}", tail(&d.log()));
        };
        log.push_str(&d.log());
        converged = status.success() && dev.applied_release() == Some(1);
        if !converged {
            eprintln!("run {runs} ended with {status}:\n{}", tail(&d.log()));
        }
    }
    let wall = t.elapsed();
    // `download interrupted: …; resuming delay_ms=… bytes=<committed by that attempt>`
    let progress: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("download interrupted"))
        .filter_map(|l| l.rsplit("bytes=").next()?.split_whitespace().next()?.parse().ok())
        .collect();
    // What the device wrote into its payload store, over all attempts.
    let metrics = std::fs::read_to_string(dev.dir.path().join("metrics.prom")).unwrap_or_default();
    let committed = metrics
        .lines()
        .find(|l| l.starts_with("ferry_download_bytes_total{"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0);
    Ok(Resumed {
        build: build_name(agent),
        committed,
        drop_every,
        served: server.bytes_served_for("payloads/"),
        requests: server.requests_for("payloads/"),
        runs,
        converged,
        wall,
        interrupted: progress.len() as u64,
        fruitless: progress.iter().filter(|&&b| b == 0).count() as u64,
    })
}

/// Median time to the end of a 1-byte ranged GET of `rel`: what a request costs the
/// chaos mirror itself (it reads and hashes the whole file for its strong ETag).
fn request_cost(op: &Operator, rel: &str) -> Result<Duration> {
    let server = ChaosServer::start(&op.mirror, Schedule::clean());
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut s = TcpStream::connect(server.addr())?;
        write!(s, "GET /{rel} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\nConnection: close\r\n\r\n")?;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn build_name(agent: &Path) -> &'static str {
    match agent.parent().and_then(Path::file_name).and_then(|n| n.to_str()) {
        Some("debug") => "debug",
        Some("release") => "release",
        _ => "other",
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A client that cannot resume: `attempts` plain GETs of the whole file, each read until
/// the connection ends. Returns how many got the whole file and the bytes spent.
fn restarting_client(op: &Operator, rel: &str, len: u64, drop_every: u64, attempts: u32) -> Result<Restarting> {
    let server = ChaosServer::start(&op.mirror, Schedule::clean().always("payloads/", Fault::DropAfter(drop_every)));
    let mut completed = 0;
    let mut received = 0;
    for _ in 0..attempts {
        let got = plain_get(server.addr(), rel)?;
        received += got;
        if got >= len {
            completed += 1;
        }
    }
    Ok(Restarting { drop_every, attempts, completed, received, served: server.bytes_served_for("payloads/") })
}

/// `GET /rel` over HTTP/1.1 with `Connection: close`; body bytes read before the end.
fn plain_get(addr: std::net::SocketAddr, rel: &str) -> Result<u64> {
    let mut s = TcpStream::connect(addr).context("connecting to the chaos mirror")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET /{rel} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut head = Vec::new();
    let mut body = 0u64;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if body == 0 && head.windows(4).all(|w| w != b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body = (head.len() - end - 4) as u64;
            }
        } else {
            body += n as u64;
        }
    }
    Ok(body)
}

fn render(args: &Args, size: u64, cost: Duration, resumed: &[Resumed], restarting: &[Restarting]) -> String {
    let mut s = format!("{HEADING}\n\n");
    s.push_str(&format!(
        "Bytes a device pulls from its mirror per payload byte when the link drops, for a {:.1} MB \
         incompressible payload ({} MiB of random files, seed {}). Goal: ≤ {GOAL} with drops every 64 KiB \
         and every 1 MiB, against a client without resume, which never finishes.\n\n",
        size as f64 / 1e6,
        args.mib,
        args.seed
    ));
    s.push_str(
        "| agent | link drops every | bytes served | served ÷ payload | goal | bytes the device committed | \
         committed ÷ payload | payload requests (committed nothing) | lost at the resets, mean per drop | wall \
         time |\n",
    );
    s.push_str("|---|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for r in resumed {
        let ratio = r.served as f64 / size as f64;
        let goal = match (r.converged, r.drop_every.is_some(), ratio <= GOAL) {
            (false, _, _) => "not converged",
            (true, false, _) => "(baseline)",
            (true, true, true) => "met",
            (true, true, false) => "missed",
        };
        let runs = if r.runs > 1 { format!(", {} runs", r.runs) } else { String::new() };
        // Every attempt commits what it received (the piece in hand is written before the
        // error is returned), so the rest of what the mirror wrote never reached the device.
        let lost = r.served.saturating_sub(r.committed);
        let per_drop = lost.checked_div(r.interrupted).map_or("-".to_string(), |m| format!("{m} B"));
        s.push_str(&format!(
            "| {} | {} | {} | {ratio:.4} | {goal}{runs} | {} | {:.4} | {} ({}) | {per_drop} | {:.1} s |\n",
            r.build,
            label(r.drop_every),
            r.served,
            r.committed,
            r.committed as f64 / size as f64,
            r.requests,
            r.fruitless,
            r.wall.as_secs_f64()
        ));
    }
    s.push_str("\nA client without resume (plain `GET` of the whole file, again from byte 0 after every drop):\n\n");
    s.push_str("| link drops every | attempts | completed | body bytes received | bytes served (all wasted) |\n");
    s.push_str("|---|---:|---:|---:|---:|\n");
    for r in restarting {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            label(Some(r.drop_every)),
            r.attempts,
            r.completed,
            r.received,
            r.served
        ));
    }
    s.push_str(
        "\nHow: the chaos mirror (`tests/src/chaos.rs`) serves the release with `DropAfter(n)` on every \
         payload response (n body bytes, a 100 ms grace for the reader, then a TCP reset); the real `ferry-agent run --once` downloads into \
         SQLite, resuming with `Range`/`If-Range` from what it committed, with `max_backoff = \"1s\"` (an \
         attempt that made progress is retried at once). Agent builds: *debug* is `target/e2e/debug/ferry-agent` \
         (dev profile, dependencies at opt-level 2, failpoints: what the end-to-end tests run), *release* is \
         `cargo build --release -p ferry-agent`. \"Bytes served\" is what the mirror wrote to its sockets for \
         `payloads/`, so bytes lost in a reset count against the device. The goal holds if the ratio stays \
         ≤ 1.02.\n\n",
    );
    s.push_str(&format!(
        "\"Bytes the device committed\" is its `ferry_download_bytes_total` metric: payload bytes written \
         into its store over all attempts. It equals the payload whenever no committed byte was fetched \
         twice, which is what resume guarantees. Every attempt commits what it received before returning \
         the error, so the difference between served and committed is what the mirror still had queued in \
         its socket when the reset went out: a reset discards the sender's queue. The mirror gives the reader \
         100 ms to take what it sent before resetting, as a link that drops after delivering n bytes does; \
         without that grace, on loopback where the mirror writes at memory speed, a 1 MiB response lost a \
         load-dependent tail of its queue at each reset (1.06-1.25 in earlier runs), bytes that never \
         crossed any link. The client without resume is measured the same way (its received column). Wall times \
         are dominated by the chaos mirror, which reads and hashes the whole {:.0} MB file for its ETag on \
         every request ({:.0} ms per request here), not by the agent.\n\n",
        size as f64 / 1e6,
        cost.as_secs_f64() * 1000.0
    ));
    s.push_str("```sh\ncargo run --release -p ferry-tests --bin bench-resume\n```\n");
    s
}
