//! Data set (a): a generated fleet repository of at least 10,000 files and 200 MB, and a
//! sequence of releases each changing a share of its files (0.1 %, 1 %, 10 %).
//!
//! The text part is `bench-sizes`' generator (`../bench_sizes/history.rs`: services,
//! sites, docs, data, vendored code, certificates, a few firmware images); binary files
//! are then added until the tree reaches its size: firmware images (machine code that
//! compresses to about half, a compressed filesystem, erased-flash padding) and compressed
//! archives (incompressible). A release picks its share of files uniformly from a seeded
//! generator and changes each the way such a file changes: a text file gets a
//! person's edit, a firmware image a point-release patch, an archive is replaced whole.
//! Every snapshot is a complete directory, so each tool reads the same trees.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::content;
use crate::history::History;
use crate::rng::Rng;
use crate::util;

/// One snapshot of a data set: a complete tree on disk.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Short label for the tables (`base`, `+0.1 %`…).
    pub label: String,
    /// The tree.
    pub dir: PathBuf,
    /// How it was made from the previous snapshot, for the report (`None`: the tables say
    /// what `git diff --shortstat` says).
    pub change: Option<String>,
}

/// Generates the base tree (`files` text files, then binaries up to `total_mb` MB) and
/// one snapshot per share in `shares` (percent of files), each from the previous, under
/// `work`.
pub fn generate(work: &Path, seed: u64, files: usize, total_mb: u64, shares: &[f64]) -> Result<Vec<Snapshot>> {
    let base = work.join("s0");
    let mut history = History::new(seed, files);
    history.write_changes(&base)?;
    let mut rng = Rng::new(seed).fork(7_000);
    let (mut bytes, _) = util::tree_size(&base)?;
    let mut n = 0;
    while bytes < total_mb * 1_000_000 {
        n += 1;
        let model = rng.pick(content::MODELS).to_string();
        let (path, data) = if rng.chance(0.5) {
            let size = rng.range(2 << 20, 8 << 20);
            let image = content::firmware(&mut rng, &model, "2.4.0", size);
            (format!("firmware/images/{model}/{model}-{n:03}.bin"), image)
        } else {
            let size = rng.range(256 << 10, 6 << 20);
            (
                format!("assets/bundles/{}-{n:03}.tar.zst", content::ident(&mut rng).replace('_', "-")),
                archive(&mut rng, size),
            )
        };
        let target = base.join(&path);
        fs::create_dir_all(target.parent().context("a path without a parent")?)?;
        fs::write(&target, &data).with_context(|| format!("writing {}", target.display()))?;
        bytes += data.len() as u64;
    }
    let mut snapshots = vec![Snapshot { label: "base".into(), dir: base.clone(), change: None }];
    let mut previous = base;
    for (i, share) in shares.iter().enumerate() {
        let dir = work.join(format!("s{}", i + 1));
        util::output(std::process::Command::new("cp").arg("-a").arg(&previous).arg(&dir))?;
        let mut rng = Rng::new(seed).fork(8_000 + i as u64);
        let what = mutate(&dir, &mut rng, *share)?;
        snapshots.push(Snapshot { label: format!("+{share} %"), dir: dir.clone(), change: Some(what) });
        previous = dir;
    }
    Ok(snapshots)
}

/// Changes `share` percent of the files under `dir` (at least one); returns a summary.
fn mutate(dir: &Path, rng: &mut Rng, share: f64) -> Result<String> {
    let mut all = Vec::new();
    list(dir, dir, &mut all)?;
    all.sort();
    let want = ((all.len() as f64 * share / 100.0).round() as usize).max(1);
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < want {
        picked.insert(rng.below(all.len()));
    }
    let (mut text, mut firmware, mut archives, mut bytes) = (0, 0, 0, 0u64);
    for i in picked {
        let path = dir.join(&all[i]);
        let old = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = all[i].to_string_lossy();
        let new = if name.ends_with(".bin") {
            firmware += 1;
            let mut image = old;
            content::patch_firmware(rng, &mut image);
            image
        } else if name.ends_with(".tar.zst") || name.ends_with(".png") {
            archives += 1;
            let size = old.len();
            archive(rng, size)
        } else {
            text += 1;
            content::edit_text(rng, &old)
        };
        bytes += new.len() as u64;
        // Replace rather than rewrite in place: a new inode, as a checkout writes it.
        let tmp = path.with_extension("bench-tmp");
        fs::write(&tmp, &new)?;
        fs::set_permissions(&tmp, fs::metadata(&path)?.permissions())?;
        fs::rename(&tmp, &path)?;
    }
    Ok(format!(
        "{want} of {} files ({text} text edited, {firmware} firmware images patched, {archives} archives or images \
         replaced; {:.1} MB of files touched)",
        all.len(),
        bytes as f64 / 1e6
    ))
}

/// A compressed archive (or image) of `size` bytes: a short header, then random bytes.
fn archive(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = b"\x28\xb5\x2f\xfd".to_vec();
    out.extend(rng.bytes(size.saturating_sub(out.len())));
    out
}

/// Every regular file under `dir`, relative to `root`.
fn list(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list(root, &entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path().strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}
