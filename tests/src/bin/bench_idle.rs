//! `bench-idle`: what `ferry-agent run` costs while it waits between polls — resident
//! memory, CPU time and wake-ups — for each agent build given (by default the debug build
//! the end-to-end tests use and, if it exists, `target/release/ferry-agent`), written into
//! `BENCHMARKS.md`.
//!
//! The daemon converges on a small release from a directory mirror (poll interval 1 h),
//! settles (12 s: idle blocking-pool threads exit after 10 s), then is watched for `--seconds`: CPU is `utime + stime` of
//! `/proc/<pid>/stat` (all threads), memory `VmRSS`/`VmHWM` of `/proc/<pid>/status`, and
//! wake-ups the context switches summed over `/proc/<pid>/task/*/status`. Once without a
//! watchdog, once with `WATCHDOG_USEC` (a ping every second) and a notify socket.
//!
//! A benchmark, not a test: it reports and does not fail on the figures.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferry_tests::fixture::{Device, Operator};
use ferry_tests::service::{Daemon, NotifySocket};
use ferry_tests::{bench_md, binaries, workspace_root};

const HEADING: &str = "## Idle daemon";

/// Measures RSS, CPU time and wake-ups of `ferry-agent run` idling between polls and
/// writes the table into BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "bench-idle", max_term_width = 100)]
struct Args {
    /// How long to watch the idle daemon, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// How long to let it settle after converging, in seconds (idle blocking-pool threads
    /// exit after 10 s).
    #[arg(long, default_value_t = 12)]
    settle: u64,
    /// Agent binaries to measure (default: the end-to-end debug build, and
    /// target/release/ferry-agent when it exists).
    #[arg(long)]
    agent: Vec<PathBuf>,
    /// Where to write the section.
    #[arg(long, default_value_os_t = workspace_root().join("BENCHMARKS.md"))]
    out: PathBuf,
    /// Print the section only; leave BENCHMARKS.md alone.
    #[arg(long)]
    dry_run: bool,
}

/// A sample of one process.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Clock ticks of user + system time, all threads.
    ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
    voluntary: u64,
    involuntary: u64,
    threads: u64,
}

struct Row {
    build: String,
    size_kib: u64,
    watchdog: bool,
    start: Sample,
    end: Sample,
    secs: f64,
    tick_ms: f64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-idle: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let agents = if args.agent.is_empty() {
        let mut v = vec![binaries().agent.clone()];
        let release = workspace_root().join("target/release/ferry-agent");
        if release.exists() {
            v.push(release);
        } else {
            eprintln!("no target/release/ferry-agent; `cargo build --release -p ferry-agent` to measure it too");
        }
        v
    } else {
        args.agent.clone()
    };
    let tick_ms = 1000.0 / clock_ticks_per_sec() as f64;
    let op = Operator::new();
    op.write(&[("app.conf", Some("port = 8080\n")), ("doc/readme.txt", Some("hello\n"))]);
    op.commit("one");
    op.release("stable", None, &[]).ok();

    let mut rows = Vec::new();
    for agent in &agents {
        for watchdog in [false, true] {
            let row = measure(&op, agent, watchdog, &args, tick_ms)?;
            eprintln!(
                "{} (watchdog {}): RSS {} KiB, HWM {} KiB, CPU {:.1} ms over {:.0} s, {} wake-ups",
                row.build,
                if watchdog { "1 s" } else { "off" },
                row.end.rss_kib,
                row.end.hwm_kib,
                (row.end.ticks - row.start.ticks) as f64 * tick_ms,
                row.secs,
                row.end.voluntary + row.end.involuntary - row.start.voluntary - row.start.involuntary
            );
            rows.push(row);
        }
    }
    let section = render(&args, &rows);
    print!("{section}");
    if !args.dry_run {
        bench_md::update_file(&args.out, HEADING, &section)
            .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!("wrote the {HEADING:?} section of {}", args.out.display());
    }
    Ok(())
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

fn build_name(agent: &Path) -> String {
    let profile = agent.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    match profile.as_deref() {
        Some("debug") => "debug (dev profile, deps at opt-level 2, failpoints)".into(),
        Some("release") => "release (opt-level s, fat LTO, panic=abort)".into(),
        _ => agent.display().to_string(),
    }
}

fn measure(op: &Operator, agent: &Path, watchdog: bool, args: &Args, tick_ms: f64) -> Result<Row> {
    let dev = Device::new(
        "stable",
        &op.root1(),
        &format!("mirrors = [\"{}\"]\npoll_interval = \"1h\"\n", op.mirror.display()),
    );
    let notify = NotifySocket::bind();
    let socket = notify.path().display().to_string();
    let env: Vec<(&str, &str)> =
        if watchdog { vec![("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "2000000")] } else { Vec::new() };
    let mut cmd = Command::new(agent);
    cmd.arg("--config").arg(&dev.config).arg("run");
    let mut d = Daemon::spawn(cmd, &env);
    if !d.wait_log("applied release 1", Duration::from_secs(120)) {
        bail!("{} did not converge:\n{}", agent.display(), d.log());
    }
    std::thread::sleep(Duration::from_secs(args.settle));
    let pid = d.pid();
    let start = sample(pid)?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    let end = sample(pid)?;
    let secs = t.elapsed().as_secs_f64();
    let status = d.stop(Duration::from_secs(10));
    if !status.success() {
        bail!("{} exited with {status} on SIGTERM:\n{}", agent.display(), d.log());
    }
    let size_kib = std::fs::metadata(agent).map(|m| m.len() / 1024).unwrap_or(0);
    Ok(Row { build: build_name(agent), size_kib, watchdog, start, end, secs, tick_ms })
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
}

fn sample(pid: u32) -> Result<Sample> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(proc_dir.join("stat")).context("reading /proc/<pid>/stat")?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("parsing /proc/<pid>/stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `after` starts at field 3.
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()).context("a /proc/<pid>/stat field");
    let status = std::fs::read_to_string(proc_dir.join("status")).context("reading /proc/<pid>/status")?;
    let mut s = Sample {
        ticks: num(14)? + num(15)?,
        rss_kib: field(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: field(&status, "VmHWM:").unwrap_or(0),
        threads: field(&status, "Threads:").unwrap_or(0),
        ..Sample::default()
    };
    for task in std::fs::read_dir(proc_dir.join("task")).context("reading /proc/<pid>/task")?.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("status")) else { continue };
        s.voluntary += field(&text, "voluntary_ctxt_switches:").unwrap_or(0);
        s.involuntary += field(&text, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    }
    Ok(s)
}

fn render(args: &Args, rows: &[Row]) -> String {
    let mut s = format!("{HEADING}\n\n");
    s.push_str(&format!(
        "`ferry-agent run` waiting between polls (poll interval 1 h), watched for {} s after it converged on a \
         small release and settled for {} s. CPU is user + system time of all threads; wake-ups are context \
         switches summed over the threads that exist at the end (threads that exited in between are not \
         counted).\n\n",
        args.seconds, args.settle
    ));
    s.push_str("| build | binary | watchdog | VmRSS | VmHWM | threads | CPU in window | CPU per hour | wake-ups in window (voluntary + involuntary) | wake-ups/s |\n");
    s.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let cpu_ms = r.end.ticks.saturating_sub(r.start.ticks) as f64 * r.tick_ms;
        let vol = r.end.voluntary.saturating_sub(r.start.voluntary);
        let invol = r.end.involuntary.saturating_sub(r.start.involuntary);
        s.push_str(&format!(
            "| {} | {:.1} MiB | {} | {} KiB | {} KiB | {} | {cpu_ms:.0} ms | {:.1} s | {} ({vol} + {invol}) | {:.2} |\n",
            r.build,
            r.size_kib as f64 / 1024.0,
            if r.watchdog { "`WATCHDOG_USEC=2000000` (ping every 1 s)" } else { "off" },
            r.end.rss_kib,
            r.end.hwm_kib,
            r.end.threads,
            cpu_ms / r.secs * 3600.0 / 1000.0,
            vol + invol,
            (vol + invol) as f64 / r.secs,
        ));
    }
    s.push_str(&format!(
        "\nCPU time comes in clock ticks of {:.0} ms, so a window with less than one tick of work shows 0 ms. \
         Measured on the development machine (2 shared cores, other builds running).\n\n",
        rows.first().map_or(10.0, |r| r.tick_ms)
    ));
    s.push_str(
        "```sh\ncargo build --release -p ferry-agent   # optional: adds the release rows\n\
         cargo run --release -p ferry-tests --bin bench-idle\n```\n",
    );
    s
}
