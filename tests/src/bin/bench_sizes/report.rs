//! The "Payload sizes" section of `BENCHMARKS.md`: the table, the goals and how the
//! numbers were made.

use std::fmt::Write as _;
use std::time::Duration;

use crate::history::ChangeSummary;
use crate::peers::FullPeers;

/// The section's heading; the section runs to the next `## ` heading.
pub const HEADING: &str = "## Payload sizes";

/// Full payloads must be within this factor of `git archive | zstd -19`.
pub const FULL_GOAL: f64 = 1.15;

/// One payload of one release.
#[derive(Debug)]
pub struct Row {
    /// Release number.
    pub release: u64,
    /// Source commit (1-based) the release was made from.
    pub commit: usize,
    /// Payload bytes (the signed size: zstd over the bundle).
    pub ferry: u64,
    /// Bytes of the `.ferry` file (payload plus container header and manifest).
    pub ferry_file: u64,
    /// Kind-specific measurements.
    pub measured: Measured,
}

/// A full payload's tree and peers.
#[derive(Debug)]
pub struct Full {
    /// Files in the snapshot tree.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Other tools on the same snapshot.
    pub peers: FullPeers,
}

/// What was measured next to a payload.
#[derive(Debug)]
pub enum Measured {
    /// A full payload.
    Full(Full),
    /// A delta payload.
    Delta {
        /// Base release.
        from: u64,
        /// Base release's source commit.
        from_commit: usize,
        /// Files changed between the two snapshot trees (`git diff --shortstat -M`).
        changed: u64,
        /// Git's thin pack for the same change.
        thin_pack: u64,
        /// `git bundle create` of the source history between the two commits.
        history_bundle: u64,
    },
}

/// Everything the section reports.
#[derive(Debug)]
pub struct Context {
    /// The command that reproduces the run.
    pub command: String,
    /// UTC date of the run.
    pub date: String,
    /// Cores, CPU, tool versions.
    pub machine: String,
    /// Generator parameters.
    pub args_note: String,
    /// Files, text bytes and binary bytes of the last commit's tree.
    pub last_tree: (usize, u64, u64),
    /// What each commit changed (the first is the initial tree).
    pub commits: Vec<ChangeSummary>,
    /// The measurements.
    pub rows: Vec<Row>,
    /// Whole run.
    pub elapsed: Duration,
    /// Building the binaries, making keys and the mirror.
    pub setup: Duration,
    /// Generating, committing and packing the history.
    pub generation: Duration,
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The Markdown section, heading included, ending with a newline.
pub fn section(cx: &Context) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(s, "Reproduce with:\n\n```sh\n{}\n```\n", cx.command);
    let _ = writeln!(
        s,
        "Run on {} on {}. The whole run took {:.1} min: {:.0} s building the binaries and making keys, {:.0} s \
         generating and packing the history, the rest releasing and measuring.\n",
        cx.date,
        cx.machine,
        cx.elapsed.as_secs_f64() / 60.0,
        cx.setup.as_secs_f64(),
        cx.generation.as_secs_f64()
    );
    let (files, text, binary) = cx.last_tree;
    let special: Vec<String> = (cx.commits.iter().enumerate())
        .filter(|(i, c)| *i > 0 && !c.what.starts_with("update "))
        .map(|(i, c)| format!("c{:02}: {}", i + 1, c.what))
        .collect();
    let _ = writeln!(
        s,
        "The repository is generated (no download) by `tests/src/bin/bench_sizes/`: a fleet-configuration \
         monorepo with services (Kubernetes-style manifests, TOML/JSON config, Python/Go/Rust-like source, shell \
         scripts, Markdown, PNG-like assets), per-site device inventories and overrides, CSV tables, PEM \
         certificates and three firmware images of 0.5–1.5 MB; {}. The last commit's tree is {} files, {} of text and \
         {} of binary. Each later commit edits, adds, removes and renames files the way a team's commits do \
         (a few to a few dozen files, mostly in one or two services or sites); besides, {}.\n",
        cx.args_note,
        thousands(files as u64),
        mb(text),
        mb(binary),
        special.join(", "),
    );
    s.push_str(
        "| release (commit) | payload | Ferry bytes | git bundle bytes | tar + zstd -19 | tar + zstd -19 --long=27 \
         | Ferry ÷ tar+zstd | git thin pack bytes | Ferry ÷ thin pack |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let mut worst_full: Option<(f64, u64)> = None;
    let mut worst_delta: Option<(f64, u64, u64)> = None;
    for row in &cx.rows {
        let release = format!("{} (c{:02})", row.release, row.commit);
        match &row.measured {
            Measured::Full(full) => {
                let ratio = row.ferry as f64 / full.peers.tar_zstd as f64;
                if worst_full.is_none_or(|(r, _)| ratio > r) {
                    worst_full = Some((ratio, row.release));
                }
                let _ = writeln!(
                    s,
                    "| {release} | full: {} files, {} | {} | {} | {} | {} | {ratio:.3} | — | — |",
                    thousands(full.files),
                    mb(full.bytes),
                    thousands(row.ferry),
                    thousands(full.peers.git_bundle),
                    thousands(full.peers.tar_zstd),
                    thousands(full.peers.tar_zstd_long),
                );
            }
            Measured::Delta { from, from_commit, changed, thin_pack, history_bundle } => {
                let ratio = row.ferry as f64 / *thin_pack as f64;
                if worst_delta.is_none_or(|(r, _, _)| ratio > r) {
                    worst_delta = Some((ratio, *from, row.release));
                }
                let _ = writeln!(
                    s,
                    "| {release} | delta from {from} (c{from_commit:02}), {changed} files changed | {} | {}¹ \
                     | — | — | — | {} | {ratio:.3} |",
                    thousands(row.ferry),
                    thousands(*history_bundle),
                    thousands(*thin_pack),
                );
            }
        }
    }
    s.push('\n');
    let overhead: Vec<u64> = cx.rows.iter().map(|r| r.ferry_file - r.ferry).collect();
    let _ = writeln!(
        s,
        "* **Ferry bytes** is the payload's signed size: the bundle (`pack.compression=0`) compressed as a whole \
         with zstd level 19, long-distance matching in an 8 MiB window. The `.ferry` file adds the container header and the signed manifest \
         ({}–{} bytes here).\n\
         * **git bundle** is `git bundle create` of the snapshot ref `refs/ferry/fleet/<n>` with git's \
         defaults (zlib at its default level, from a repository packed by `git gc`; `pack.threads=1` for \
         repeatable output). ¹For a delta, git cannot make a bundle between two orphan snapshots (`git bundle \
         create <old>..<new>` has no boundary commit, so it writes the whole new snapshot with no prerequisite); \
         the number shown is instead `git bundle create c<old>..c<new>` of the operator's source history, what a \
         tool shipping history would send.\n\
         * **tar + zstd** is `git archive --format=tar <snapshot> | zstd -19` (and with `--long=27`): the tree alone, \
         no git objects, so a lower bound for a git-free format.\n\
         * **git thin pack** is `git pack-objects --revs --thin --shallow --stdout` fed `<new>` and `^<old>` with \
         git's default compression and delta window (`pack.threads=1` for repeatable output): the smallest thing \
         git itself sends for the change. It has no bundle header; Ferry's delta carries one (about 140 bytes: \
         the prerequisite and ref ids), which decides the comparison only for a change made of a few KB of \
         incompressible data.",
        overhead.iter().min().copied().unwrap_or(0),
        overhead.iter().max().copied().unwrap_or(0),
    );
    if let Some((i, c)) = cx.commits.iter().enumerate().find(|(_, c)| c.what.contains("renamed by version")) {
        let _ = writeln!(
            s,
            "* Thin packs find delta bases by path: for each new object git looks in the old snapshot's tree under \
             the same path only. c{:02} ({}) therefore makes every delta that spans it carry that image whole, \
             though the image changed in a few places only.",
            i + 1,
            c.what
        );
    }
    s.push_str("\nGoals:\n\n");
    if let Some((ratio, release)) = worst_full {
        let _ = writeln!(
            s,
            "* full payload within {FULL_GOAL}× of `tar | zstd -19`: **{}** (largest ratio {ratio:.3}, release \
             {release})",
            if ratio <= FULL_GOAL { "met" } else { "missed" }
        );
    }
    if let Some((ratio, from, release)) = worst_delta {
        let _ = writeln!(
            s,
            "* delta no larger than git's thin pack for the same change: **{}** (largest ratio {ratio:.3}, release \
             {release} from {from})",
            if ratio <= 1.0 { "met" } else { "missed" }
        );
    }
    s.push_str("\n<details><summary>What each commit changed</summary>\n\n");
    for (i, c) in cx.commits.iter().enumerate() {
        if i == 0 {
            s.push_str("* c01: the initial tree\n");
        } else {
            let _ = writeln!(
                s,
                "* c{:02}: {}: {} edited, {} added, {} removed, {} renamed",
                i + 1,
                c.what,
                c.edited,
                c.added,
                c.removed,
                c.renamed
            );
        }
    }
    s.push_str("\n</details>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
