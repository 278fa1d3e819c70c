//! Shared helpers for Ferry's end-to-end tests: the real `bundler` and `ferry-agent`
//! binaries (built once per test process into `target/e2e`, the agent with its
//! `failpoints` feature, both with `docgen`), operator fixtures (git repos, keys, trust
//! root, mirror) and device fixtures (config, state directory), all in temporary directories.
//!
//! Binaries are built by a nested `cargo build` with its own target directory so that it
//! never waits on the lock of the `cargo test` that runs us.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod adversarial;
pub mod bench_md;
pub mod chaos;
pub mod crash;
pub mod daemon;
pub mod fixture;
pub mod hostile;
pub mod serve_process;
pub mod service;
pub mod trees;

/// Paths of the built binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `bundler`.
    pub bundler: PathBuf,
    /// `ferry-agent` with failpoints compiled in.
    pub agent: PathBuf,
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Builds (once per process) and returns the binaries.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| build().unwrap_or_else(|e| panic!("building the binaries for end-to-end tests: {e:#}")))
}

fn build() -> Result<Binaries> {
    let root = workspace_root();
    let target = root.join("target").join("e2e");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "ferry-bundler", "-p", "ferry-agent", "--features"])
        // docgen: `generate-docs`, which tests/tests/generated_docs.rs checks deploy/ against.
        .arg("ferry-agent/failpoints,ferry-agent/docgen,ferry-bundler/docgen")
        .arg("--target-dir")
        .arg(&target)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    let bins =
        Binaries { bundler: target.join("debug").join("bundler"), agent: target.join("debug").join("ferry-agent") };
    for b in [&bins.bundler, &bins.agent] {
        if !b.exists() {
            bail!("{} was not built", b.display());
        }
    }
    Ok(bins)
}

/// A finished command's output, with helpers for assertions.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit code is 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Panics unless the exit code is `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit code:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Run {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}")).into()
}

/// Runs git in `dir` with a controlled environment (no user or system config).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_cmd(dir).args(args).output().unwrap_or_else(|e| panic!("git {args:?}: {e}"));
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A git command with a controlled environment.
pub fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Operator")
        .env("GIT_AUTHOR_EMAIL", "op@example.com")
        .env("GIT_COMMITTER_NAME", "Operator")
        .env("GIT_COMMITTER_EMAIL", "op@example.com")
        .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "@1700000000 +0000");
    c
}
