//! Time to apply each release on a device, Ferry against git and OSTree doing the same
//! work: take the release in, verify it, write the tree into a fresh directory, make it
//! durable, switch to it atomically, and drop the tree from two releases ago (A/B).
//!
//! * **Ferry**: `ferry-agent import <file>.ferry` into a device's state directory (verify
//!   signatures and digest, import the pack into the store, check the tree out into the
//!   inactive slot and make it durable with one `syncfs`, switch `current`, journal).
//! * **git** (the way `git-sync` deploys: a worktree per revision and a link swap):
//!   full: `git clone --bare <full.bundle>` then `git worktree add --detach slot-N rN`;
//!   delta: `git fetch <delta.bundle> 'refs/tags/*:refs/tags/*'`, `rm -rf` the worktree of
//!   two releases ago and `git worktree prune`, then `git worktree add`. Then every file and
//!   directory of the repository and the new worktree is fsynced (`xargs sync --`), a new
//!   `current` link is renamed into place and the directory fsynced.
//! * **OSTree**: full: `ostree init --mode=bare`; then `ostree pull-local --untrusted`
//!   (checksums verified) of the release's commit from the operator's archive repository,
//!   `rm -rf` the checkout of two releases ago, `ostree checkout` (hard links into the
//!   repository, as OSTree deploys), fsync of the checkout, link swap as for git.
//!
//! Each run applies the full release and then every delta in order on a fresh device, so
//! every step starts from the state the previous one left; the three tools alternate
//! within a run, in an order rotated from run to run (each goes first once in three runs).
//! The first run also compares each tool's tree with the snapshot (`diff -r`, untimed).
//!
//! Nothing is deleted between runs (every run's directories go at the end), and the
//! measurements start [`SETTLE`] after a `sync`: on ext4 without a journal (this machine's
//! disk) the inode allocator skips every inode freed in the last minute, scanning past
//! each one (`recently_deleted` in `fs/ext4/ialloc.c`), so whichever tool creates files right
//! after thousands were deleted pays for it. Measured: the same full Ferry apply took
//! 3.2–3.8 s right after another device's tree was removed and 2.2–2.6 s a minute later,
//! two thirds of its CPU time in `find_inode_bit` (`perf record`). Deleting between runs
//! made the first tool of the next run, always Ferry, pay for the others' cleanup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ferry::{Bins, Device};
use crate::synth::Snapshot;
use crate::util::{self, q};
use crate::wire::Published;

/// Timings of one tool: `samples[step][run]`.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Per step (release), per run.
    pub samples: Vec<Vec<Duration>>,
}

/// What [`measure`] found.
#[derive(Debug)]
pub struct Applied {
    /// Ferry, git, OSTree.
    pub ferry: Timings,
    /// git.
    pub git: Timings,
    /// OSTree.
    pub ostree: Timings,
}

/// Applies every release of `published` `runs` times with each tool under `work`.
pub fn measure(
    bins: &Bins,
    work: &Path,
    snapshots: &[Snapshot],
    published: &Published,
    runs: usize,
) -> Result<Applied> {
    let steps = snapshots.len();
    let empty = || Timings { samples: vec![Vec::new(); steps] };
    let mut applied = Applied { ferry: empty(), git: empty(), ostree: empty() };
    util::bash("sync")?;
    eprintln!("  waiting {SETTLE:?} for inodes freed by the preparation to age (see apply.rs)…");
    std::thread::sleep(SETTLE);
    let mut made = Vec::new();
    for run in 0..runs {
        let check = run == 0;
        let ferry_dir = work.join(format!("ferry-{run}"));
        let device = Device::new(bins, &published.operator, &ferry_dir)?;
        let git_dir = work.join(format!("git-{run}"));
        let ostree_dir = work.join(format!("ostree-{run}"));
        std::fs::create_dir_all(&git_dir)?;
        std::fs::create_dir_all(&ostree_dir)?;
        for (step, snapshot) in snapshots.iter().enumerate() {
            let release = step + 1;
            let payloads = &published.payloads[step];
            let file = match step {
                0 => payloads.iter().find(|p| p.from.is_none()),
                _ => payloads.iter().find(|p| p.from == Some(step as u64)),
            }
            .with_context(|| format!("release {release} lacks its payload"))?;
            for tool in (0..3).map(|i| (i + run) % 3) {
                match tool {
                    0 => {
                        let took = util::time(&mut device.import(&file.file))?;
                        if device.applied()? != release as u64 {
                            bail!("ferry-agent import did not apply release {release}");
                        }
                        applied.ferry.samples[step].push(took);
                        if check {
                            same_tree(&snapshot.dir, &ferry_dir.join("state").join("current"))?;
                        }
                    }
                    1 => {
                        applied.git.samples[step].push(util::time_bash(&git_script(&git_dir, published, step))?);
                        if check {
                            same_tree(&snapshot.dir, &git_dir.join("current"))?;
                        }
                    }
                    _ => {
                        let script = ostree_script(&ostree_dir, published, step);
                        applied.ostree.samples[step].push(util::time_bash(&script)?);
                        if check {
                            same_tree(&snapshot.dir, &ostree_dir.join("current"))?;
                        }
                    }
                }
            }
            eprintln!(
                "  run {} release {release}: ferry {}, git {}, ostree {}",
                run + 1,
                util::secs(applied.ferry.samples[step][run]),
                util::secs(applied.git.samples[step][run]),
                util::secs(applied.ostree.samples[step][run])
            );
        }
        made.extend([ferry_dir, git_dir, ostree_dir]);
    }
    for dir in &made {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(applied)
}

/// How long the apply measurements wait after a `sync` before they start: ext4 without a
/// journal skips inodes freed in the last 60 s (300 s more while their inode table block is
/// dirty) when it allocates new ones.
const SETTLE: Duration = Duration::from_secs(65);

/// fsyncs every file and directory under the given paths, then switches `current` in `dir`
/// to `slot` by renaming a new link over it, and fsyncs `dir`.
fn durable_switch(dir: &Path, fsync: &[PathBuf], slot: &str) -> String {
    let paths: Vec<String> = fsync.iter().map(|p| q(p)).collect();
    format!(
        "find {} \\( -type f -o -type d \\) -print0 | xargs -0 sync --\nln -sfn {slot} {d}/current.tmp\nmv -T \
         {d}/current.tmp {d}/current\nsync {d}\n",
        paths.join(" "),
        d = q(dir)
    )
}

fn git_script(dir: &Path, published: &Published, step: usize) -> String {
    let release = step + 1;
    let repo = dir.join("repo.git");
    let slot = format!("slot-{release}");
    let mut s = String::from("export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null\n");
    let (full, delta) = &published.bundles[step];
    if step == 0 {
        s += &format!("git clone -q --bare {} {}\n", q(full), q(&repo));
    } else {
        let delta = delta.as_ref().map_or_else(String::new, |d| q(d));
        s += &format!("git --git-dir={} fetch -q {delta} 'refs/tags/*:refs/tags/*'\n", q(&repo));
    }
    if release > 2 {
        s += &format!(
            "rm -rf {}\ngit --git-dir={} worktree prune\n",
            q(&dir.join(format!("slot-{}", release - 2))),
            q(&repo)
        );
    }
    s += &format!("git --git-dir={} worktree add -q --detach {} r{release}\n", q(&repo), q(&dir.join(&slot)));
    s + &durable_switch(dir, &[repo, dir.join(&slot)], &slot)
}

fn ostree_script(dir: &Path, published: &Published, step: usize) -> String {
    let release = step + 1;
    let repo = dir.join("repo");
    let slot = format!("slot-{release}");
    let rev = &published.revs[step];
    let mut s = String::new();
    if step == 0 {
        s += &format!("ostree init --repo={} --mode=bare\n", q(&repo));
    }
    s += &format!("ostree pull-local --repo={} --untrusted {} {rev}\n", q(&repo), q(&published.ostree));
    if release > 2 {
        s += &format!("rm -rf {}\n", q(&dir.join(format!("slot-{}", release - 2))));
    }
    s += &format!("ostree checkout --repo={} {rev} {}\n", q(&repo), q(&dir.join(&slot)));
    s + &durable_switch(dir, &[dir.join(&slot)], &slot)
}

/// Fails unless `dir` (through links) holds exactly the snapshot's files.
fn same_tree(snapshot: &Path, dir: &Path) -> Result<()> {
    util::bash(&format!("diff -r --no-dereference -x .git -x .ferry-slot {} {}/ >/dev/null", q(snapshot), q(dir)))
        .with_context(|| format!("{} differs from {}", dir.display(), snapshot.display()))?;
    Ok(())
}
