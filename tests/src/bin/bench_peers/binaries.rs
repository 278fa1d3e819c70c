//! Data set (c): binaries, two release builds of a real Rust program at two versions:
//! `ferry-agent` built from two commits of this repository.
//!
//! Each commit's tree is taken with `git archive` (the working tree is not touched) into a
//! cache directory, with fresh modification times (cargo fingerprints path packages by
//! mtime, relative to the workspace root: with the commit's times, the second commit
//! would pass for the first one's already-built tree), and built with `cargo build --release --locked -p ferry-agent` into a
//! shared target directory (`target/bench-peers/`), so dependencies compile once; the built
//! binary is kept as `target/bench-peers/ferry-agent-<commit>` and reused by later runs.
//! Each snapshot is a directory holding that one binary at `bin/ferry-agent`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use ferry_tests::workspace_root;

use crate::synth::Snapshot;
use crate::util::{self, q};

/// Builds (or reuses) the agent at each of `commits` and lays each out as a snapshot
/// under `work`.
pub fn prepare(work: &Path, commits: &[String]) -> Result<Vec<Snapshot>> {
    let cache = workspace_root().join("target").join("bench-peers");
    std::fs::create_dir_all(&cache)?;
    let mut snapshots = Vec::new();
    for commit in commits {
        let full = util::output(ferry_tests::git_cmd(&workspace_root()).args([
            "rev-parse",
            "--verify",
            &format!("{commit}^{{commit}}"),
        ]))
        .with_context(|| format!("{commit} is not a commit of this repository"))?;
        let full = full.trim();
        let short = &full[..10];
        let binary = cache.join(format!("ferry-agent-{short}"));
        if !binary.is_file() {
            build(&cache, full, &binary)?;
        }
        let dir = work.join(format!("agent-{short}"));
        std::fs::create_dir_all(dir.join("bin"))?;
        std::fs::copy(&binary, dir.join("bin").join("ferry-agent"))?;
        let subject = util::output(ferry_tests::git_cmd(&workspace_root()).args(["log", "-1", "--format=%s", full]))?;
        let size = std::fs::metadata(&binary)?.len();
        snapshots.push(Snapshot {
            label: format!("agent {short}"),
            dir,
            change: Some(format!(
                "`ferry-agent` {} bytes, built at {short} ({})",
                util::thousands(size),
                subject.trim().chars().take(60).collect::<String>()
            )),
        });
    }
    Ok(snapshots)
}

fn build(cache: &Path, commit: &str, binary: &PathBuf) -> Result<()> {
    let src = cache.join(format!("src-{}", &commit[..10]));
    if src.exists() {
        std::fs::remove_dir_all(&src)?;
    }
    std::fs::create_dir_all(&src)?;
    eprintln!("  building ferry-agent at {} (release, cached afterwards)…", &commit[..10]);
    util::bash(&format!(
        "export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null\ngit -C {} archive {commit} | tar -x -m -C {}",
        q(&workspace_root()),
        q(&src)
    ))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    util::output(
        Command::new(cargo)
            .current_dir(&src)
            .args(["build", "--release", "--locked", "-p", "ferry-agent", "--target-dir"])
            .arg(cache.join("target")),
    )?;
    std::fs::copy(cache.join("target").join("release").join("ferry-agent"), binary)?;
    std::fs::remove_dir_all(&src)?;
    Ok(())
}
