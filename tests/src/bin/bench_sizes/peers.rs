//! What the same snapshots cost with the tools an operator could use instead of Ferry:
//! `git bundle create` (zlib per object, git's defaults), `git archive | zstd` (a tarball
//! of the tree, no git objects at all) and, for a change, git's own thin pack between the
//! two snapshots (`pack-objects --thin --shallow`, git's defaults).
//!
//! Everything here only counts bytes: outputs go to a counting sink or a scratch file.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// A git command in `repo` with no user or system config (git's built-in defaults).
pub fn git(repo: &Path) -> Command {
    let mut c = ferry_tests::git_cmd(repo);
    c.stderr(Stdio::piped());
    c
}

/// Runs `cmd`, feeding it `stdin` (or a file), and returns how many bytes it wrote to
/// stdout, which it never keeps.
pub fn count_stdout(cmd: &mut Command, stdin: Input<'_>) -> Result<u64> {
    let what = format!("{cmd:?}");
    match &stdin {
        Input::Bytes(_) => cmd.stdin(Stdio::piped()),
        Input::File(path) => cmd.stdin(fs::File::open(path).with_context(|| format!("opening {}", path.display()))?),
    };
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("running {what}"))?;
    let (counted, stderr) = std::thread::scope(|scope| {
        if let (Input::Bytes(bytes), Some(mut pipe)) = (&stdin, child.stdin.take()) {
            scope.spawn(move || pipe.write_all(bytes));
        }
        let mut err = child.stderr.take();
        let stderr = scope.spawn(move || {
            let mut s = String::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let counted = match child.stdout.take() {
            Some(mut out) => io::copy(&mut out, &mut io::sink()),
            None => Ok(0),
        };
        (counted, stderr.join().unwrap_or_default())
    });
    let status = child.wait()?;
    if !status.success() {
        bail!("{what} failed ({status}): {}", stderr.trim());
    }
    Ok(counted?)
}

/// Standard input for [`count_stdout`].
pub enum Input<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// This file's contents.
    File(PathBuf),
}

/// The sizes of one snapshot with the other tools.
#[derive(Debug, Clone, Copy)]
pub struct FullPeers {
    /// `git bundle create` of the snapshot ref.
    pub git_bundle: u64,
    /// … `| zstd -19`.
    pub tar_zstd: u64,
    /// … `| zstd -19 --long=27`.
    pub tar_zstd_long: u64,
}

/// Measures `snapshot` (a ref) with `git bundle create` and `git archive | zstd`, using
/// `scratch` for the intermediate files. The two zstd runs go in parallel (two cores).
/// Git's delta search runs on one thread: with several its choices vary from run to run.
pub fn full(repo: &Path, snapshot: &str, scratch: &Path) -> Result<FullPeers> {
    let bundle = scratch.join("peer.bundle");
    let out = git(repo).args(["-c", "pack.threads=1", "bundle", "create", "-q"]).arg(&bundle).arg(snapshot).output()?;
    if !out.status.success() {
        bail!("git bundle create {snapshot}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let git_bundle = fs::metadata(&bundle)?.len();
    fs::remove_file(&bundle)?;

    let tar = scratch.join("peer.tar");
    let file = fs::File::create(&tar)?;
    let status = git(repo).args(["archive", "--format=tar", snapshot]).stdout(file).status()?;
    if !status.success() {
        bail!("git archive {snapshot} failed ({status})");
    }
    let zstd = |extra: &[&str]| {
        count_stdout(Command::new("zstd").args(["-19", "-q", "-c"]).args(extra), Input::File(tar.clone()))
    };
    let (plain, long) = std::thread::scope(|scope| {
        let long = scope.spawn(|| zstd(&["--long=27"]));
        (zstd(&[]), long.join())
    });
    fs::remove_file(&tar)?;
    let long = long.map_err(|_| anyhow::anyhow!("the zstd thread panicked"))?;
    Ok(FullPeers { git_bundle, tar_zstd: plain?, tar_zstd_long: long? })
}

/// Git's own thin pack for the change from `old` to `new` (snapshot commits), with its
/// default compression and delta window; one thread, so the result is repeatable.
pub fn thin_pack(repo: &Path, old: &str, new: &str) -> Result<u64> {
    let revs = format!("{new}\n^{old}\n");
    count_stdout(
        git(repo).args(["-c", "pack.threads=1", "pack-objects", "--revs", "--thin", "--shallow", "--stdout", "-q"]),
        Input::Bytes(revs.as_bytes()),
    )
}

/// `git bundle create` of the operator's source history between two commits (tags), the
/// incremental bundle a history-shipping tool would send for the same change.
pub fn history_bundle(repo: &Path, old_tag: &str, new_tag: &str, scratch: &Path) -> Result<u64> {
    let bundle = scratch.join("history.bundle");
    let range = format!("{old_tag}..{new_tag}");
    let out = git(repo).args(["-c", "pack.threads=1", "bundle", "create", "-q"]).arg(&bundle).arg(&range).output()?;
    if !out.status.success() {
        bail!("git bundle create {range}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let size = fs::metadata(&bundle)?.len();
    fs::remove_file(&bundle)?;
    Ok(size)
}

/// The first line a command prints (`git --version`), or "unknown".
pub fn version_of(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(if o.stdout.is_empty() { o.stderr } else { o.stdout }).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}
