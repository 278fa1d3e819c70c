//! `bench-sizes`: Ferry's payload sizes on a realistic history, next to what git and
//! tar+zstd make of the same snapshots, written into `BENCHMARKS.md`.
//!
//! It generates a fleet repository from a seed (several thousand files, 20+ commits; see
//! `history.rs`), publishes several of its commits with the real `bundler release` (the
//! debug build the end-to-end tests use: sizes do not depend on the build profile), reads
//! the payload sizes from the signed manifests, and measures the same snapshots with
//! `git bundle create`, `git archive | zstd -19 [--long=27]` and git's own thin pack.
//! A benchmark, not a test: it checks the goals and reports them, it does not fail on them.

mod content;
mod history;
mod manifests;
mod peers;
mod report;
mod rng;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferry_tests::fixture::Operator;
use ferry_tests::{git, run, workspace_root};

use crate::history::History;
use crate::report::{Full, Measured, Row};

/// Measures Ferry's full and delta payload sizes on a generated repository against
/// `git bundle create`, `git archive | zstd -19` and git's thin packs, and writes the
/// table into BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "bench-sizes", max_term_width = 100)]
struct Args {
    /// Seed of the generated repository.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Files in the first commit.
    #[arg(long, default_value_t = 4000)]
    files: usize,
    /// Commits in the generated history.
    #[arg(long, default_value_t = 24)]
    commits: usize,
    /// The commits (1-based) to publish as releases 1, 2, 3…, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,16,20,21,24")]
    release_commits: Vec<usize>,
    /// Thin deltas from this many previous releases (`bundler release --deltas`).
    #[arg(long, default_value_t = 3)]
    deltas: u64,
    /// Where to write the "Payload sizes" section.
    #[arg(long, default_value_os_t = workspace_root().join("BENCHMARKS.md"))]
    out: PathBuf,
    /// Print the section only; leave BENCHMARKS.md alone.
    #[arg(long)]
    dry_run: bool,
    /// Keep the generated repository and mirror (prints where).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run_bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-sizes: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_bench(args: &Args) -> Result<()> {
    let started = Instant::now();
    let mut releases = args.release_commits.clone();
    releases.dedup();
    if releases.is_empty() || releases.windows(2).any(|w| w[0] >= w[1]) || releases[releases.len() - 1] > args.commits {
        bail!("--release-commits must be increasing and within 1..={}", args.commits);
    }

    eprintln!("building bundler and setting up keys and a mirror…");
    let op = Operator::new();
    let setup = started.elapsed();
    // No background gc mid-history; one delta thread, so `git gc` and `git bundle create`
    // give the same bytes on every run.
    git(&op.repo, &["config", "gc.auto", "0"]);
    git(&op.repo, &["config", "pack.threads", "1"]);
    let scratch = op.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;

    // The history: commit 1 is the generated tree, then one change per commit.
    let mut history = History::new(args.seed, args.files);
    let mut summaries = Vec::new();
    for n in 1..=args.commits {
        let summary = (n > 1).then(|| history.commit(n, args.commits));
        history.write_changes(&op.repo)?;
        let message = summary.as_ref().map_or_else(|| "initial fleet configuration".to_string(), |s| s.what.clone());
        git(&op.repo, &["add", "-A"]);
        git(&op.repo, &["commit", "-q", "--allow-empty", "-m", &message]);
        git(&op.repo, &["tag", &tag(n)]);
        let (files, bytes) = history.size();
        eprintln!(
            "[{:>4.0?}] commit {n:>2}: {files} files, {:.1} MB: {message}",
            started.elapsed(),
            bytes as f64 / 1e6
        );
        summaries.push(summary.unwrap_or_default());
    }
    // How an operator's repository usually sits on disk: packed with git's defaults.
    git(&op.repo, &["gc", "-q"]);
    let generation = started.elapsed() - setup;

    let mut rows = Vec::new();
    for (i, &commit) in releases.iter().enumerate() {
        let release = i as u64 + 1;
        let step = Instant::now();
        eprintln!("release {release} (commit {commit})…");
        let mut cmd = op.bundler(&["release", "--repo"]);
        cmd.arg(&op.repo).args(["--ref", &tag(commit), "--channel", "fleet", "--mirror"]).arg(&op.mirror);
        cmd.arg("--release-key").arg(op.key("release")).arg("--index-key").arg(op.key("index"));
        cmd.args(["--deltas", &args.deltas.to_string()]);
        let out = run(&mut cmd);
        if out.code != 0 {
            bail!("bundler release of commit {commit} failed:\n{}", out.all());
        }
        let snapshot = git(&op.repo, &["rev-parse", &format!("refs/ferry/fleet/{release}")]);
        let manifest = latest_manifest(&op)?;
        for payload in manifest["document"]["payloads"].as_array().context("manifest without payloads")? {
            let size = payload["size"].as_u64().context("payload without a size")?;
            let file = op.mirror.join("payloads").join(format!("{}.ferry", payload["sha256"].as_str().unwrap_or("")));
            let file_size = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?.len();
            let measured = if payload["kind"] == "full" {
                let tree = git(&op.repo, &["ls-tree", "-r", "-l", "--full-tree", &snapshot]);
                let (files, bytes) = tree.lines().fold((0u64, 0u64), |(n, b), line| {
                    let size = line.split_whitespace().nth(3).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                    (n + 1, b + size)
                });
                let peers = peers::full(&op.repo, &format!("refs/ferry/fleet/{release}"), &scratch)?;
                Measured::Full(Full { files, bytes, peers })
            } else {
                let from = payload["kind"]["delta"]["from_release"].as_u64().context("delta without a base")?;
                let base = git(&op.repo, &["rev-parse", &format!("refs/ferry/fleet/{from}")]);
                let stat = git(&op.repo, &["diff", "--shortstat", "-M", &base, &snapshot]);
                let changed = stat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let from_commit = releases[from as usize - 1];
                Measured::Delta {
                    from,
                    from_commit,
                    changed,
                    thin_pack: peers::thin_pack(&op.repo, &base, &snapshot)?,
                    history_bundle: peers::history_bundle(&op.repo, &tag(from_commit), &tag(commit), &scratch)?,
                }
            };
            rows.push(Row { release, commit, ferry: size, ferry_file: file_size, measured });
        }
        eprintln!("release {release} measured in {:.0?}", step.elapsed());
    }

    let (text, binary) = history.text_and_binary_bytes();
    let section = report::section(&report::Context {
        command: command_line(args),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10].to_string(),
        machine: machine(),
        args_note: format!(
            "seed {}, {} files in the first commit, {} commits, releases of commits {}, `--deltas {}`",
            args.seed,
            args.files,
            args.commits,
            releases.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
            args.deltas
        ),
        last_tree: (history.size().0, text, binary),
        commits: summaries,
        rows,
        elapsed: started.elapsed(),
        setup,
        generation,
    });
    println!("{section}");
    if !args.dry_run {
        ferry_tests::bench_md::update_file(&args.out, report::HEADING, &section)
            .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!("wrote {}", args.out.display());
    }
    if args.keep {
        let Operator { dir, repo, mirror, .. } = op;
        let kept = dir.keep();
        eprintln!("kept {} (repo {}, mirror {})", kept.display(), repo.display(), mirror.display());
    }
    Ok(())
}

fn tag(commit: usize) -> String {
    format!("c{commit:02}")
}

/// The latest release's manifest, as `bundler inspect` prints it.
fn latest_manifest(op: &Operator) -> Result<serde_json::Value> {
    let index = op.inspect(&op.mirror.join("channels").join("fleet").join("index"));
    let digest = index["document"]["latest"]["manifest_sha256"].as_str().context("index without a latest release")?;
    Ok(op.inspect(&op.mirror.join("releases").join(format!("{digest}.manifest"))))
}

/// The command that reproduces this run (defaults left out).
fn command_line(args: &Args) -> String {
    let defaults = Args::parse_from(["bench-sizes"]);
    let mut cmd = String::from("cargo run -p ferry-tests --bin bench-sizes");
    let mut extra = Vec::new();
    if args.seed != defaults.seed {
        extra.push(format!("--seed {}", args.seed));
    }
    if args.files != defaults.files {
        extra.push(format!("--files {}", args.files));
    }
    if args.commits != defaults.commits {
        extra.push(format!("--commits {}", args.commits));
    }
    if args.release_commits != defaults.release_commits {
        let list: Vec<String> = args.release_commits.iter().map(|c| c.to_string()).collect();
        extra.push(format!("--release-commits {}", list.join(",")));
    }
    if args.deltas != defaults.deltas {
        extra.push(format!("--deltas {}", args.deltas));
    }
    if !extra.is_empty() {
        cmd.push_str(" -- ");
        cmd.push_str(&extra.join(" "));
    }
    cmd
}

/// Cores, CPU model and tool versions.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cores} cores ({cpu}), shared with other builds; {}; zstd CLI {}",
        peers::version_of("git", "--version"),
        peers::version_of("zstd", "--version")
            .split_whitespace()
            .find(|w| w.starts_with('v'))
            .unwrap_or("unknown")
            .trim_end_matches(',')
    )
}
