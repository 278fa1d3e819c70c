//! Isolated git sandboxes for tests: a private `HOME`, no system config, fixed identities
//! and dates, and a ceiling so repository discovery never wanders out of the temp dir.

#![allow(clippy::unwrap_used)]

use super::{Git, ObjectFormat};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Committer time of test commits: 2023-11-14T22:13:20 in a +02:00 zone.
pub(crate) const SOURCE_DATE: &str = "@1700000000 +0200";

pub(crate) struct Sandbox {
    pub(crate) root: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("home")).unwrap();
        Sandbox { root }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub(crate) fn env(&self) -> Vec<(OsString, OsString)> {
        let home = self.path("home");
        vec![
            ("HOME".into(), home.clone().into()),
            ("XDG_CONFIG_HOME".into(), home.join(".config").into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CEILING_DIRECTORIES".into(), self.root.path().into()),
            ("LC_ALL".into(), "C".into()),
        ]
    }

    /// Runs git in `dir` with the sandbox environment and a fixed test identity.
    pub(crate) fn git(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false"])
            .args(args)
            .envs(self.env())
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("GIT_AUTHOR_DATE", SOURCE_DATE)
            .env("GIT_COMMITTER_DATE", SOURCE_DATE)
            .output()
            .unwrap()
    }

    /// Like [`Sandbox::git`], panicking on failure; returns trimmed stdout.
    pub(crate) fn git_ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git(dir, args);
        assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    /// `git init` (or `--bare`) a new repository `name` in the sandbox.
    pub(crate) fn init(&self, name: &str, format: ObjectFormat, bare: bool) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let format = format!("--object-format={}", format.as_str());
        let mut args = vec!["init", "-q", format.as_str()];
        if bare {
            args.push("--bare");
        }
        self.git_ok(&dir, &args);
        dir
    }

    pub(crate) fn open(&self, dir: &Path) -> Git {
        Git::open_with_env(dir, self.env()).unwrap()
    }

    pub(crate) fn commit_all(&self, dir: &Path, message: &str) -> String {
        self.git_ok(dir, &["add", "-A"]);
        self.git_ok(dir, &["commit", "-q", "--allow-empty", "-m", message]);
        self.git_ok(dir, &["rev-parse", "HEAD"])
    }
}

pub(crate) fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}
