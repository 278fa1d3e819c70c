//! Data set (b): consecutive published versions of a crate from crates.io, as releases.
//!
//! Each version's `.crate` (a gzipped tarball of the published sources) is downloaded from
//! `https://static.crates.io/crates/<name>/<name>-<version>.crate` and unpacked into its own
//! directory; when the download fails, the sources cargo already unpacked under
//! `~/.cargo/registry/src/*/<name>-<version>` are used instead, and the report says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::synth::Snapshot;
use crate::util::{self, q};

/// Where the sources came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Downloaded from static.crates.io.
    Download,
    /// Cargo's local registry cache.
    LocalRegistry,
}

/// Unpacks `name` at each of `versions` under `work`, one snapshot per version.
pub fn fetch(work: &Path, name: &str, versions: &[String]) -> Result<(Vec<Snapshot>, Source)> {
    let mut snapshots = Vec::new();
    let mut source = Source::Download;
    for version in versions {
        let dir = work.join(format!("{name}-{version}"));
        std::fs::create_dir_all(&dir)?;
        let url = format!("https://static.crates.io/crates/{name}/{name}-{version}.crate");
        let downloaded = util::bash(&format!(
            "curl -fsSL --retry 2 --max-time 120 {url} | tar -xz --strip-components=1 -C {}",
            q(&dir)
        ));
        if let Err(e) = downloaded {
            let Some(local) = local_copy(name, version) else {
                bail!("cannot download {url} ({e:#}) and {name}-{version} is not in ~/.cargo/registry/src");
            };
            eprintln!("download of {name} {version} failed ({e:#}); using {}", local.display());
            std::fs::remove_dir_all(&dir)?;
            util::output(Command::new("cp").arg("-a").arg(&local).arg(&dir))?;
            source = Source::LocalRegistry;
        }
        snapshots.push(Snapshot { label: format!("{name} {version}"), dir, change: None });
    }
    Ok((snapshots, source))
}

fn local_copy(name: &str, version: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    std::fs::read_dir(home.join("registry").join("src"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(format!("{name}-{version}")))
        .find(|p| p.is_dir())
}
