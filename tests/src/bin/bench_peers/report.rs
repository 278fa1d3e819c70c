//! The `BENCHMARKS.md` sections `bench-peers` owns: tables, how each figure was made, and
//! each goal marked met or missed from the figures of this run.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;

use crate::apply::Applied;
use crate::ferry::Bins;
use crate::hashing::Hashing;
use crate::serve::Serving;
use crate::synth::Snapshot;
use crate::util::{self, median, secs, thousands};
use crate::wire::{Published, Row};

/// Bytes on the wire.
pub const WIRE: &str = "## Bytes on the wire against the peers";
/// Apply time.
pub const APPLY: &str = "## Apply time against git and OSTree";
/// Hashing.
pub const HASHING: &str = "## Payload hashing against sha256sum";
/// Serving.
pub const SERVING: &str = "## Serving against nginx";
/// Footprint.
pub const FOOTPRINT: &str = "## Agent footprint";

/// The command that regenerates everything.
const COMMAND: &str = "bench/run";

/// When and where.
#[derive(Debug)]
pub struct Context {
    date: String,
    runs: usize,
}

impl Context {
    /// Now, on this machine.
    pub fn new(runs: usize) -> Context {
        Context {
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10].to_string(),
            runs,
        }
    }

    fn header(&self, s: &mut String, heading: &str, tools: &[&str]) {
        let versions: Vec<String> = tools.iter().map(|t| util::tool_version(t)).collect();
        let tools = if versions.is_empty() { String::new() } else { format!("; {}", versions.join(", ")) };
        let _ = write!(
            s,
            "{heading}\n\nReproduce with `{COMMAND}` (it installs the peers, builds the release binaries and \
             rewrites every table). Run on {} on {}{tools}.\n\n",
            self.date,
            util::machine(),
        );
    }
}

/// One data set's rows.
#[derive(Debug)]
pub struct WireSet {
    /// Title.
    pub name: String,
    /// A text tree (goal: deltas ≤ every peer) rather than binaries.
    pub text: bool,
    /// Rows.
    pub rows: Vec<Row>,
    /// Anything the reader must know about the data.
    pub note: Option<String>,
}

/// The bytes-on-the-wire section.
pub fn wire(ctx: &Context, sets: &[WireSet]) -> (String, String) {
    let mut s = String::new();
    ctx.header(&mut s, WIRE, &["git", "zstd", "rsync", "ostree"]);
    let mut worst_full: Option<(f64, String)> = None;
    let mut worst_delta: Option<(f64, String)> = None;
    let mut worst_payload: f64 = 0.0;
    let mut worst_binary: Option<(f64, String)> = None;
    for set in sets {
        let _ =
            writeln!(s, "Data set {}.{}\n", set.name, set.note.as_ref().map_or(String::new(), |n| format!(" {n}.")));
        s.push_str(
            "| release | payload | what changed | Ferry `.ferry` | of which payload | git bundle | tar + zstd -19 | rsync \
             -z sent | OSTree static delta | Ferry ÷ tar+zstd (full) or ÷ smallest peer (delta) |\n\
             |---|---|---|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for r in &set.rows {
            let (ratio, kind) = match r.from {
                None => {
                    let t = r.tar_zstd.unwrap_or(0);
                    let ratio = r.ferry as f64 / t.max(1) as f64;
                    let what = format!("{} full", set.name.split_whitespace().next().unwrap_or(""));
                    if worst_full.as_ref().is_none_or(|(w, _)| ratio > *w) {
                        worst_full = Some((ratio, format!("{what}, release {}", r.release)));
                    }
                    (ratio, "full".to_string())
                }
                Some(from) => {
                    let smallest = r.git_bundle.min(r.rsync).min(r.ostree);
                    let ratio = r.ferry as f64 / smallest.max(1) as f64;
                    if !set.text {
                        let vs_ostree = r.ferry as f64 / r.ostree.max(1) as f64;
                        if worst_binary.as_ref().is_none_or(|(w, _)| vs_ostree > *w) {
                            worst_binary = Some((vs_ostree, format!("release {} from {from}", r.release)));
                        }
                    }
                    if set.text {
                        worst_payload = worst_payload.max(r.ferry_payload as f64 / smallest.max(1) as f64);
                    }
                    if set.text && worst_delta.as_ref().is_none_or(|(w, _)| ratio > *w) {
                        let what = set.name.split_whitespace().next().unwrap_or("").to_string();
                        worst_delta = Some((ratio, format!("{what}, release {} from {from}", r.release)));
                    }
                    (ratio, format!("delta from {from}"))
                }
            };
            let _ = writeln!(
                s,
                "| {} ({}) | {kind} | {} | {} | {} | {} | {} | {} | {} | {ratio:.3} |",
                r.release,
                r.label,
                r.change,
                thousands(r.ferry),
                thousands(r.ferry_payload),
                thousands(r.git_bundle),
                r.tar_zstd.map_or("—".to_string(), thousands),
                thousands(r.rsync),
                thousands(r.ostree),
            );
        }
        s.push('\n');
    }
    s.push_str(
        "* **Ferry** is the size of the `.ferry` file `bundler release --deltas 1` wrote (container header, signed \
         manifest, payload: a git bundle compressed with zstd -19, long-distance matching in an 8 MiB window): every byte a device downloads.\n\
         * **git bundle** is `git bundle create` of the release's tag (full) or of `<previous>..<tag>` (delta), git's \
         defaults, one delta-search thread. The commits are the snapshots, so a delta bundle is the operator's \
         history between the two releases.\n\
         * **tar + zstd -19** is `git archive --format=tar <tag> | zstd -19`: the tree alone, no history, no \
         signature; the bar for a full payload.\n\
         * **rsync -z sent** is rsync's \"Total bytes sent\" for `rsync -a -z --delete --no-whole-file` into an empty \
         directory (full) or into a copy of the previous snapshot (delta; rsync skips unchanged files by size and \
         mtime, as after an earlier sync), with rsync's negotiated compression. It excludes what the receiver sends \
         back (block checksums of every changed file), so it is below what a link carries.\n\
         * **OSTree static delta** is the size of `ostree static-delta generate --inline --min-fallback-size=0 \
         --filename F` (no fallback objects: everything the client needs is in F), from the empty tree (full) or from the previous release's commit (delta: rollsum and bsdiff on modified files, \
         LZMA), with the snapshots committed to an `archive` repository.\n\
         * Data set (a): the text part is `bench-sizes`' fleet-repository generator; firmware images (machine code \
         compressing to about half, a compressed filesystem, padding) and compressed archives (incompressible) \
         fill the tree to its size. Each release changes its share of the files, picked uniformly: text files get a \
         person's edit, firmware images a point-release patch, archives and images are replaced whole. Full \
         payloads of the peers are measured for the first release only (each is a several-minute compression).\n\
         * Data set (b) is each version's published `.crate` from static.crates.io, unpacked; data set (c) is a \
         tree holding one file, `bin/ferry-agent`, the release build (opt-level s, fat LTO, stripped) of this \
         repository at each commit, taken with `git archive` and built with `--locked`.\n\n",
    );
    s.push_str("Goals:\n\n");
    if let Some((w, what)) = worst_full {
        let _ = writeln!(
            s,
            "* full payload within 1.15× of `tar | zstd -19`: **{}** (largest ratio {w:.3}, {what})",
            if w <= 1.15 { "met" } else { "missed" }
        );
    }
    if let Some((w, what)) = worst_delta {
        let _ = writeln!(
            s,
            "* delta no larger than the smallest peer on text trees: **{}** (largest ratio {w:.3}, {what}; the \
             payload alone, without the container header and signed manifest no peer carries: largest ratio \
             {worst_payload:.3})",
            if w <= 1.0 { "met" } else { "missed" }
        );
    }
    match worst_binary {
        Some((w, what)) => {
            let _ = writeln!(
                s,
                "* delta within 1.5× of OSTree's bsdiff deltas on binaries: **{}** ({w:.3}× OSTree, data set (c) {what})",
                if w <= 1.5 { "met" } else { "missed" }
            );
        }
        None => s.push_str("* delta within 1.5× of OSTree's bsdiff deltas on binaries: **not measured** in this run\n"),
    }
    (WIRE.into(), s)
}

/// The apply-time section.
pub fn apply(
    ctx: &Context,
    snapshots: &[Snapshot],
    shares: &[f64],
    published: &Published,
    applied: &Applied,
) -> (String, String) {
    let mut s = String::new();
    ctx.header(&mut s, APPLY, &["git", "ostree"]);
    let _ = writeln!(
        s,
        "Data set (a) (see the bytes table), applied on a fresh device: the full release, then each delta in \
         order. Median of {} runs; the ratio is Ferry's median over the peer's, measured in the same run.\n",
        ctx.runs
    );
    s.push_str(
        "| release | applied as | Ferry | git | OSTree | Ferry ÷ git | Ferry ÷ OSTree | Ferry ÷ Ferry full |\n\
         |---|---|--:|--:|--:|--:|--:|--:|\n",
    );
    let full = median(&applied.ferry.samples[0]);
    let mut full_ratios = (0.0, 0.0);
    for (step, snap) in snapshots.iter().enumerate() {
        let f = median(&applied.ferry.samples[step]);
        let g = median(&applied.git.samples[step]);
        let o = median(&applied.ostree.samples[step]);
        let (rg, ro) = (ratio(f, g), ratio(f, o));
        if step == 0 {
            full_ratios = (rg, ro);
        }
        let what = match step {
            0 => "full".to_string(),
            1 => "delta from 1, into the empty slot B".to_string(),
            _ => format!("delta from {step}, into the slot of release {}", step - 1),
        };
        let bytes = published.rows.iter().find(|r| r.release == step + 1 && (r.from.is_none() == (step == 0)));
        let _ = writeln!(
            s,
            "| {} ({}) | {what}{} | {} | {} | {} | {rg:.2} | {ro:.2} | {:.2} |",
            step + 1,
            snap.label,
            bytes.map_or(String::new(), |r| format!(", {} bytes", thousands(r.ferry))),
            secs(f),
            secs(g),
            secs(o),
            ratio(f, full),
        );
    }
    s.push_str(
        "\n* **Ferry** is `ferry-agent import <release>.ferry` (release build) into the device's state directory: \
         verify the signatures and the payload digest, import the pack into the store, write the inactive slot \
         and make it durable with one `syncfs(2)`, switch `current`, journal. The inactive slot is written whole \
         when it is empty (the full release; the first delta, into slot B) and updated in place when it still \
         holds the release before the active one untouched (every later delta: only the files that differ \
         between the two releases are written; docs/decisions.md, \"In-place slot updates\").\n\
         * **git** deploys the way `git-sync` does, a worktree per revision and a link swap: full is `git clone \
         --bare <full.bundle>` plus `git worktree add --detach`; a delta is `git fetch <delta.bundle>` plus \
         `git worktree add`, after removing the worktree of two releases ago (A/B, as Ferry's slots). Then every \
         file and directory of the repository and the new worktree is fsynced (`find … | xargs sync --`), a new \
         `current` link is renamed into place and its directory fsynced. Git checks object hashes as it indexes \
         the pack; nothing is signed.\n\
         * **OSTree**: `ostree init --mode=bare` (full only), `ostree pull-local --untrusted` (checksums verified; \
         no signature) of the release's commit from the operator's archive repository, removal of the checkout of \
         two releases ago, `ostree checkout` (hard links into the repository, as OSTree deploys), fsync of the \
         checkout, the same link swap.\n\
         * All three write into the same file system (ext4 without a journal, the machine's only disk); the \
         first run compares each tool's tree with the snapshot (`diff -r`, not timed). The tools take turns in an \
         order rotated from run to run, nothing is deleted between runs, and the runs start a minute after a \
         `sync`: this ext4 skips inodes freed in the last minute when it allocates new ones, so a tool creating \
         files right after a mass deletion is slowed by it (`tests/src/bin/bench_peers/apply.rs`).\n\n",
    );
    s.push_str("Goals:\n\n");
    let _ = writeln!(
        s,
        "* full release no slower than git: **{}** ({:.2}×)\n* full release no slower than OSTree: **{}** ({:.2}×)",
        if full_ratios.0 <= 1.0 { "met" } else { "missed" },
        full_ratios.0,
        if full_ratios.1 <= 1.0 { "met" } else { "missed" },
        full_ratios.1
    );
    // The change a delta's slot write crosses, in percent of the files: the first delta
    // writes the empty slot B whole (its own share is shown); every later one updates the
    // slot of two releases ago in place, across both releases' changes.
    let share = |i: usize| shares.get(i).copied().unwrap_or(100.0);
    let deltas: Vec<(f64, f64, String)> = (1..snapshots.len())
        .map(|i| {
            let r = ratio(median(&applied.ferry.samples[i]), full);
            match i {
                1 => (r, share(0), format!("{} %", share(0))),
                _ => (r, share(i - 2) + share(i - 1), format!("{} % + {} %", share(i - 2), share(i - 1))),
            }
        })
        .collect();
    let limit = |crossed: f64| 0.1 + crossed / 100.0;
    let within = |(r, crossed, _): &(f64, f64, String)| *r <= limit(*crossed);
    let list = |d: &[(f64, f64, String)]| {
        d.iter().map(|(r, c, what)| format!("{r:.2} for {what} (limit {:.2})", limit(*c))).collect::<Vec<_>>()
    };
    if let Some((first, later)) = deltas.split_first() {
        let _ = writeln!(
            s,
            "* delta time proportional to the change, not the tree (counted as met when a delta takes at most a \
             tenth of the full apply plus the share of the files its slot write crosses: an in-place update \
             brings the slot of two releases ago forward across both releases' changes), for every delta into a \
             slot that holds an earlier release: **{}** (delta ÷ full: {}); a device's first delta, into the \
             empty slot B, writes the whole tree: **{}** ({})\n",
            if later.iter().all(within) { "met" } else { "missed" },
            list(later).join(", "),
            if within(first) { "met" } else { "missed" },
            list(std::slice::from_ref(first)).join(", ")
        );
    }
    (APPLY.into(), s)
}

/// The hashing section.
pub fn hashing(ctx: &Context, h: &Hashing) -> (String, String) {
    let mut s = String::new();
    ctx.header(&mut s, HASHING, &["sha256sum"]);
    let mbps = |d: Duration| h.bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6;
    let (f, c) = (mbps(median(&h.ferry)), mbps(median(&h.sha256sum)));
    let _ = writeln!(
        s,
        "| file | Ferry (`DigestWriter`, 64 KiB reads) | `sha256sum` (whole process) | Ferry ÷ sha256sum |\n|---|--:|--:|--:|\n\
         | {} MiB of random bytes, in the page cache | {f:.0} MB/s | {c:.0} MB/s | {:.2} |\n",
        h.bytes >> 20,
        f / c
    );
    let _ = writeln!(
        s,
        "Median of {} runs each, alternating. Ferry's figure is `ferry_proto::digest::DigestWriter` (the hasher \
         `ferry-agent` verifies payloads with) in `bench-peers`' {} build, reading the file in 64 KiB blocks; both \
         must agree on the digest. Goal: ≥ 0.9× `sha256sum`: **{}**.\n",
        ctx.runs,
        if h.optimised { "release" } else { "debug" },
        if f / c >= 0.9 { "met" } else { "missed" }
    );
    (HASHING.into(), s)
}

/// The serving section.
pub fn serving(ctx: &Context, sv: &Serving) -> (String, String) {
    let mut s = String::new();
    ctx.header(&mut s, SERVING, &["wrk", "nginx"]);
    let _ = writeln!(
        s,
        "`wrk -t2 -c{} -d{}s` on loopback against each server in turn, serving the same mirror directory (data \
         set (b)'s). Index polls send `If-None-Match` with the server's own ETag and get 304; payload downloads \
         fetch one {}-byte `.ferry` file whole. nginx with `worker_processes auto`, `sendfile on`, access log \
         off; `bundler serve` is the release build.\n",
        sv.connections,
        sv.seconds,
        thousands(sv.payload_bytes),
    );
    s.push_str("| load | `bundler serve` | nginx | bundler ÷ nginx |\n|---|--:|--:|--:|\n");
    let b = &sv.bundler;
    let n = &sv.nginx;
    let _ = writeln!(
        s,
        "| index polls answered 304 | {:.0} req/s | {:.0} req/s | {:.2} |",
        b.polls_per_sec,
        n.polls_per_sec,
        b.polls_per_sec / n.polls_per_sec.max(1e-9)
    );
    let mb = |rps: f64| rps * sv.payload_bytes as f64 / 1e6;
    let _ = writeln!(
        s,
        "| payload downloads | {:.0} req/s ({:.0} MB/s) | {:.0} req/s ({:.0} MB/s) | {:.2} |\n",
        b.payloads_per_sec,
        mb(b.payloads_per_sec),
        n.payloads_per_sec,
        mb(n.payloads_per_sec),
        b.payloads_per_sec / n.payloads_per_sec.max(1e-9)
    );
    for (who, e) in [("bundler serve", &b.errors), ("nginx", &n.errors)] {
        if !e.is_empty() {
            let _ = writeln!(s, "wrk reported for {who}: {e}.\n");
        }
    }
    s.push_str(
        "wrk and the server share the machine's cores, so both figures are bounded by the client too; the ratio is \
         what this compares.\n",
    );
    (SERVING.into(), s)
}

/// The footprint section: binary sizes here, the rest in the sections that measure it.
pub fn footprint(ctx: &Context, bins: &Bins) -> Result<(String, String)> {
    let mut s = String::new();
    ctx.header(&mut s, FOOTPRINT, &[]);
    let agent = std::fs::metadata(&bins.agent)?.len();
    let stripped = stripped_size(&bins.agent)?;
    let bundler = std::fs::metadata(&bins.bundler)?.len();
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let _ = writeln!(
        s,
        "| binary | as built | after `strip` | goal |\n|---|--:|--:|---|\n| `ferry-agent` (release: opt-level s, fat \
         LTO, panic=abort, strip) | {} bytes ({:.2} MiB) | {} bytes ({:.2} MiB) | ≤ 8 MiB: **{}** |\n| `bundler` \
         (release) | {} bytes ({:.2} MiB) | — | — |\n",
        thousands(agent),
        mib(agent),
        thousands(stripped),
        mib(stripped),
        if stripped <= 8 << 20 { "met" } else { "missed" },
        thousands(bundler),
        mib(bundler)
    );
    s.push_str(
        "Idle RSS, CPU and wake-ups between polls are in \"Idle daemon\" (`bench-idle`), peak RSS applying a 1 GiB \
         payload in \"Peak memory\" (`bench-memory`); `bench/run` runs both after `bench-peers`.\n",
    );
    Ok((FOOTPRINT.into(), s))
}

fn stripped_size(binary: &std::path::Path) -> Result<u64> {
    let tmp = tempfile::NamedTempFile::new()?;
    util::output(std::process::Command::new("strip").arg("-o").arg(tmp.path()).arg(binary))?;
    Ok(std::fs::metadata(tmp.path())?.len())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}
