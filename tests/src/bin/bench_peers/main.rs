//! `bench-peers`: Ferry against the tools an operator would pick instead, on generated and
//! real data, with the tables written into `BENCHMARKS.md`. Run through `bench/run`, which
//! installs the peers (Debian packages), builds the release binaries and this one, and
//! then runs the other benchmark binaries too.
//!
//! Data sets: (a) a generated fleet repository of 10,000+ files and 200+ MB with releases
//! changing 0.1 %, 1 % and 10 % of its files (`synth.rs`); (b) consecutive versions of a
//! crate from crates.io (`crates.rs`). Comparisons: bytes on the wire per release against
//! `git bundle`, `git archive | zstd -19`, rsync and OSTree static deltas (`wire.rs`); time
//! to apply each release of (a) against git and OSTree (`apply.rs`); SHA-256 throughput
//! against `sha256sum` (`hashing.rs`); `bundler serve` against nginx (`serve.rs`); the
//! agent's binary size. A benchmark, not a test: it reports the goals, it does not fail on
//! them.

#[allow(dead_code)]
#[path = "../bench_sizes/content.rs"]
mod content;
#[allow(dead_code)]
#[path = "../bench_sizes/history.rs"]
mod history;
#[allow(dead_code)]
#[path = "../bench_sizes/manifests.rs"]
mod manifests;
#[allow(dead_code)]
#[path = "../bench_sizes/rng.rs"]
mod rng;

mod apply;
mod binaries;
mod crates;
mod ferry;
mod hashing;
mod report;
mod serve;
mod synth;
mod util;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use ferry_tests::workspace_root;

/// Compares Ferry with git, tar+zstd, rsync, OSTree, sha256sum and nginx, and writes the
/// tables into BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "bench-peers", max_term_width = 100)]
struct Args {
    /// Directory holding the release `bundler` and `ferry-agent`.
    #[arg(long, default_value_os_t = workspace_root().join("target").join("release"))]
    bins: PathBuf,
    /// Runs of every timed comparison (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed of data set (a).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Text files in data set (a)'s base tree (binaries are added on top).
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Size of data set (a)'s base tree in MB (binaries fill what text leaves).
    #[arg(long, default_value_t = 200)]
    mb: u64,
    /// Share of files each release of data set (a) changes, in percent. The second 0.1 %
    /// release is the first small delta a device applies into a slot holding an earlier
    /// release (in place); the first delta of a fresh device fills the empty slot B.
    #[arg(long, value_delimiter = ',', default_value = "0.1,1,10,0.1")]
    shares: Vec<f64>,
    /// The crate of data set (b).
    #[arg(long = "crate", default_value = "tokio")]
    crate_name: String,
    /// Its consecutive versions.
    #[arg(long, value_delimiter = ',', default_value = "1.44.0,1.44.1,1.44.2,1.45.0")]
    versions: Vec<String>,
    /// Two (or more) commits of this repository whose release `ferry-agent` builds make
    /// data set (c).
    #[arg(long, value_delimiter = ',', default_value = "5fdb32f,243bd71")]
    agent_commits: Vec<String>,
    /// Size of the file hashed, in MiB.
    #[arg(long, default_value_t = 512)]
    hash_mib: usize,
    /// Concurrent connections of the serving load.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Seconds of each serving load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Comparisons to run (all by default).
    #[arg(long, value_delimiter = ',', default_value = "wire,apply,hash,serve,footprint")]
    only: Vec<Part>,
    /// Where to write the sections.
    #[arg(long, default_value_os_t = workspace_root().join("BENCHMARKS.md"))]
    out: PathBuf,
    /// Print the sections only; leave BENCHMARKS.md alone.
    #[arg(long)]
    dry_run: bool,
    /// Keep the data sets and mirrors (prints where).
    #[arg(long)]
    keep: bool,
}

/// One comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Bytes on the wire, data sets (a), (b) and (c).
    Wire,
    /// Apply time on data set (a) (publishes it, as `wire` does).
    Apply,
    /// SHA-256 throughput.
    Hash,
    /// `bundler serve` against nginx (serves data set (b)'s mirror).
    Serve,
    /// The agent's binary size.
    Footprint,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-peers: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let wants = |p: Part| args.only.contains(&p);
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    util::require(&["git", "zstd", "rsync", "ostree", "sha256sum", "curl", "tar", "nginx", "wrk"])?;
    let work = tempfile::Builder::new().prefix("bench-peers-").tempdir().context("making a work directory")?;
    // Private copies: a build in the shared tree must not swap a binary mid-run.
    let bin_dir = work.path().join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let bins = ferry::Bins { bundler: bin_dir.join("bundler"), agent: bin_dir.join("ferry-agent") };
    for (from, to) in [(args.bins.join("bundler"), &bins.bundler), (args.bins.join("ferry-agent"), &bins.agent)] {
        if !from.is_file() {
            bail!(
                "{} is missing: run bench/run (or cargo build --release -p ferry-agent -p ferry-bundler)",
                from.display()
            );
        }
        std::fs::copy(&from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    let ctx = report::Context::new(args.runs);

    let emit = |(heading, section): (String, String)| -> Result<()> {
        println!("{section}");
        if !args.dry_run {
            ferry_tests::bench_md::update_file(&args.out, &heading, &section)
                .with_context(|| format!("writing {}", args.out.display()))?;
            eprintln!("wrote the {heading:?} section of {}", args.out.display());
        }
        Ok(())
    };

    // Bytes first (they do not depend on the machine's load), timings after.
    let mut wire_sets = Vec::new();
    let mut set_a = None;
    if wants(Part::Wire) || wants(Part::Apply) {
        eprintln!("[{:>4.0?}] generating data set (a)…", started.elapsed());
        let dir = work.path().join("a");
        let snapshots = synth::generate(&dir.join("trees"), args.seed, args.files, args.mb, &args.shares)?;
        eprintln!("[{:>4.0?}] publishing data set (a)…", started.elapsed());
        let published = wire::measure(&bins, &dir, &snapshots, false)?;
        wire_sets.push(report::WireSet {
            name: format!(
                "(a) generated fleet repository (seed {}, {} text files plus binaries to {} MB)",
                args.seed, args.files, args.mb
            ),
            text: true,
            rows: published.rows.clone(),
            note: None,
        });
        set_a = Some((dir, snapshots, published));
    }
    let mut served_mirror = None;
    if wants(Part::Wire) || wants(Part::Serve) {
        eprintln!("[{:>4.0?}] data set (b): {} {}…", started.elapsed(), args.crate_name, args.versions.join(", "));
        let dir = work.path().join("b");
        let (snapshots, source) = crates::fetch(&dir.join("trees"), &args.crate_name, &args.versions)?;
        let published = wire::measure(&bins, &dir, &snapshots, true)?;
        wire_sets.push(report::WireSet {
            name: format!("(b) crates.io: {} {}", args.crate_name, args.versions.join(", ")),
            text: true,
            rows: published.rows.clone(),
            note: (source == crates::Source::LocalRegistry)
                .then(|| "static.crates.io was unreachable: sources from ~/.cargo/registry/src".to_string()),
        });
        served_mirror = Some(published);
    }
    if wants(Part::Wire) {
        eprintln!("[{:>4.0?}] data set (c): ferry-agent at {}…", started.elapsed(), args.agent_commits.join(", "));
        let dir = work.path().join("c");
        let snapshots = binaries::prepare(&dir.join("trees"), &args.agent_commits)?;
        let published = wire::measure(&bins, &dir, &snapshots, true)?;
        wire_sets.push(report::WireSet {
            name: format!("(c) binaries: release `ferry-agent` built at {}", args.agent_commits.join(", ")),
            text: false,
            rows: published.rows.clone(),
            note: None,
        });
        emit(report::wire(&ctx, &wire_sets))?;
    }
    if let (true, Some((dir, snapshots, published))) = (wants(Part::Apply), &set_a) {
        eprintln!("[{:>4.0?}] applying data set (a)…", started.elapsed());
        let applied = apply::measure(&bins, &dir.join("devices"), snapshots, published, args.runs)?;
        emit(report::apply(&ctx, snapshots, &args.shares, published, &applied))?;
    }
    if wants(Part::Hash) {
        eprintln!("[{:>4.0?}] hashing {} MiB…", started.elapsed(), args.hash_mib);
        let h = hashing::measure(&work.path().join("hash.bin"), args.hash_mib, args.runs)?;
        emit(report::hashing(&ctx, &h))?;
    }
    if wants(Part::Serve) {
        let published = served_mirror.as_ref().context("no mirror to serve")?;
        // The largest payload: a full release of the crate.
        let payload =
            published.payloads.iter().flatten().max_by_key(|p| p.bytes).context("the mirror has no payloads")?;
        eprintln!("[{:>4.0?}] serving…", started.elapsed());
        let s = serve::measure(
            &bins.bundler,
            &published.operator.mirror,
            &published.operator.channel,
            &payload.file,
            &work.path().join("serve"),
            args.connections,
            args.seconds,
        )?;
        emit(report::serving(&ctx, &s))?;
    }
    if wants(Part::Footprint) {
        emit(report::footprint(&ctx, &bins)?)?;
    }
    eprintln!("[{:>4.0?}] done", started.elapsed());
    if args.keep {
        eprintln!("kept {}", work.keep().display());
    }
    Ok(())
}
