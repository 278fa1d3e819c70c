//! Bytes on the wire: each snapshot of a data set published with Ferry and packed by the
//! tools an operator would pick instead, on the same trees.
//!
//! * **Ferry**: `bundler release --deltas 1` of a git commit of the snapshot; the size of
//!   each `.ferry` file (container header, signed manifest and payload).
//! * **git bundle**: `git bundle create` of the release's tag (full) or of `<prev>..<tag>`
//!   (delta; the commits are the snapshots, so this is the operator's history), git's
//!   defaults, one delta-search thread so the bytes repeat.
//! * **tar + zstd -19**: `git archive --format=tar <tag> | zstd -19` (full only).
//! * **rsync**: `rsync -a -z --delete --no-whole-file --stats` of the snapshot into an
//!   empty directory (full) or into a copy of the previous snapshot (delta, unchanged files
//!   skipped by rsync's size-and-mtime check, as after a previous sync); "Total bytes sent"
//!   (sender to receiver, compressed, with rsync's own framing). The checksums the receiver
//!   sends back are not counted.
//! * **OSTree static delta**: the snapshots committed to an `archive` repository, then
//!   `ostree static-delta generate --inline --min-fallback-size=0 --filename F` from the
//!   empty tree (full) or from the previous commit (delta: rollsum and bsdiff for modified
//!   files, then LZMA); the size of F. Without `--min-fallback-size=0` files over 4 MB would
//!   be "fallback" objects the client fetches separately, outside F.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::ferry::{Bins, Operator, Payload};
use crate::synth::Snapshot;
use crate::util::{self, q, thousands};

/// A data set published by every tool, kept for the apply-time comparison.
#[derive(Debug)]
pub struct Published {
    /// The OSTree `archive` repository and each snapshot's commit.
    pub ostree: PathBuf,
    /// OSTree commit ids, one per snapshot.
    pub revs: Vec<String>,
    /// Ferry's payloads per release (index 0 is release 1).
    pub payloads: Vec<Vec<Payload>>,
    /// Git bundles per release: the full one and (from release 2) the delta from the
    /// previous release.
    pub bundles: Vec<(PathBuf, Option<PathBuf>)>,
    /// The table rows.
    pub rows: Vec<Row>,
    /// The Ferry operator (its mirror is served in the serving comparison).
    pub operator: Operator,
}

/// One row of the bytes table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Release number (1-based).
    pub release: usize,
    /// The snapshot's label.
    pub label: String,
    /// `None` for a full payload, the base release for a delta.
    pub from: Option<usize>,
    /// What changed (or the tree's size for a full).
    pub change: String,
    /// Ferry's `.ferry` file.
    pub ferry: u64,
    /// Its payload alone (the `.ferry` file less the container header and signed manifest).
    pub ferry_payload: u64,
    /// `git bundle create`.
    pub git_bundle: u64,
    /// `git archive | zstd -19` (full only).
    pub tar_zstd: Option<u64>,
    /// rsync bytes sent.
    pub rsync: u64,
    /// OSTree static delta.
    pub ostree: u64,
}

/// Publishes `snapshots` with every tool under `work` and measures them. Full payloads
/// are measured for every release when `every_full`, else for the first only.
pub fn measure(bins: &Bins, work: &Path, snapshots: &[Snapshot], every_full: bool) -> Result<Published> {
    std::fs::create_dir_all(work)?;
    let repo = work.join("repo");
    let ostree = work.join("ostree");
    let scratch = work.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    util::bash(&format!(
        "git init -q -b main {r}\ngit -C {r} config gc.auto 0\ngit -C {r} config pack.threads 1\nostree init \
         --repo={o} --mode=archive",
        r = q(&repo),
        o = q(&ostree)
    ))?;
    let operator = Operator::new(bins, &work.join("ferry"), "bench")?;
    let mut published = Published {
        ostree: ostree.clone(),
        revs: Vec::new(),
        payloads: Vec::new(),
        bundles: Vec::new(),
        rows: Vec::new(),
        operator,
    };
    for (i, snap) in snapshots.iter().enumerate() {
        let release = i + 1;
        let tag = format!("r{release}");
        eprintln!("  release {release} ({}): committing and publishing…", snap.label);
        util::output(git(&repo).arg("--work-tree").arg(&snap.dir).args(["add", "-A"]))?;
        util::output(git(&repo).args(["commit", "-q", "--allow-empty", "-m", &snap.label]))?;
        util::output(git(&repo).args(["tag", &tag]))?;
        let rev = util::output(
            Command::new("ostree")
                .arg(format!("--repo={}", ostree.display()))
                .args(["commit", "--branch=bench", "--no-xattrs", "-s", &tag])
                .arg(format!("--tree=dir={}", snap.dir.display())),
        )?
        .trim()
        .to_owned();
        let payloads = published.operator.release(&repo, &tag)?;

        let full_bundle = work.join(format!("{tag}.bundle"));
        util::output(git(&repo).args(["-c", "pack.threads=1", "bundle", "create", "-q"]).arg(&full_bundle).arg(&tag))?;
        if i == 0 || every_full {
            eprintln!("  release {release}: full payloads of the peers…");
            let ferry = payloads.iter().find(|p| p.from.is_none()).context("a release without a full payload")?;
            let tar_zstd =
                util::bash(&format!("git -C {} archive --format=tar {tag} | zstd -19 -q -c | wc -c", q(&repo)))?
                    .trim()
                    .parse::<u64>()
                    .context("counting tar | zstd")?;
            let empty = scratch.join("rsync-full");
            let rsync = rsync_sent(&snap.dir, &empty)?;
            std::fs::remove_dir_all(&empty)?;
            let ostree_bytes = static_delta(&ostree, None, &rev, &scratch)?;
            let (bytes, files) = util::tree_size(&snap.dir)?;
            published.rows.push(Row {
                release,
                label: snap.label.clone(),
                from: None,
                change: format!("{} files, {:.1} MB", thousands(files), bytes as f64 / 1e6),
                ferry: ferry.bytes,
                ferry_payload: ferry.payload,
                git_bundle: std::fs::metadata(&full_bundle)?.len(),
                tar_zstd: Some(tar_zstd),
                rsync,
                ostree: ostree_bytes,
            });
        }
        let mut delta_bundle = None;
        if i > 0 {
            eprintln!("  release {release}: deltas of the peers…");
            let prev = format!("r{i}");
            let ferry = payloads
                .iter()
                .find(|p| p.from == Some(i as u64))
                .with_context(|| format!("release {release} has no delta from release {i}"))?;
            let bundle = work.join(format!("{prev}-{tag}.bundle"));
            util::output(
                git(&repo)
                    .args(["-c", "pack.threads=1", "bundle", "create", "-q"])
                    .arg(&bundle)
                    .arg(format!("{prev}..{tag}")),
            )?;
            let dest = scratch.join("rsync-delta");
            util::output(Command::new("cp").arg("-a").arg(&snapshots[i - 1].dir).arg(&dest))?;
            let rsync = rsync_sent(&snap.dir, &dest)?;
            std::fs::remove_dir_all(&dest)?;
            let ostree_bytes = static_delta(&ostree, Some(&published.revs[i - 1]), &rev, &scratch)?;
            let change = match &snap.change {
                Some(c) => c.clone(),
                None => util::output(git(&repo).args(["diff", "--shortstat", &prev, &tag]))?.trim().to_owned(),
            };
            published.rows.push(Row {
                release,
                label: snap.label.clone(),
                from: Some(i),
                change,
                ferry: ferry.bytes,
                ferry_payload: ferry.payload,
                git_bundle: std::fs::metadata(&bundle)?.len(),
                tar_zstd: None,
                rsync,
                ostree: ostree_bytes,
            });
            delta_bundle = Some(bundle);
        }
        published.bundles.push((full_bundle, delta_bundle));
        published.revs.push(rev);
        published.payloads.push(payloads);
    }
    Ok(published)
}

/// A git command in `repo` with no user or system config.
fn git(repo: &Path) -> Command {
    let mut c = ferry_tests::git_cmd(repo);
    c.stdin(std::process::Stdio::null());
    c
}

/// rsync's "Total bytes sent" syncing `src` into `dest`.
fn rsync_sent(src: &Path, dest: &Path) -> Result<u64> {
    let out = util::output(
        Command::new("rsync")
            .args(["-a", "-z", "--delete", "--no-whole-file", "--stats"])
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", dest.display())),
    )?;
    let line = out.lines().find(|l| l.starts_with("Total bytes sent:")).context("rsync printed no byte count")?;
    line.trim_start_matches("Total bytes sent:").trim().replace(',', "").parse().context("rsync's byte count")
}

/// The size of an inline OSTree static delta to `to` from `from` (the empty tree if none).
fn static_delta(repo: &Path, from: Option<&str>, to: &str, scratch: &Path) -> Result<u64> {
    let file = scratch.join("ostree.delta");
    let mut cmd = Command::new("ostree");
    // No fallback objects: by default files over 4 MB are left out of the delta, for the
    // client to fetch whole as separate objects; counting the delta file alone would miss them.
    cmd.arg(format!("--repo={}", repo.display())).args([
        "static-delta",
        "generate",
        "--inline",
        "--min-fallback-size=0",
    ]);
    match from {
        Some(f) => cmd.arg(format!("--from={f}")),
        None => cmd.arg("--empty"),
    };
    cmd.arg(format!("--to={to}")).arg(format!("--filename={}", file.display()));
    util::output(&mut cmd)?;
    let size = std::fs::metadata(&file)?.len();
    std::fs::remove_file(&file)?;
    Ok(size)
}
