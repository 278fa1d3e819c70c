//! A mirror directory on the operator's side: reads and verifies what is there, and
//! writes new files atomically (temporary file, fsync, rename, fsync directory) so a
//! static server never serves half a file. Content-addressed files are never rewritten.

use anyhow::{bail, Context, Result};
use ferry_proto::index::ChannelIndex;
use ferry_proto::{layout, ChannelName, Limits, ReleaseManifest, Sha256Digest, Verified, VerifiedRoot};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A mirror directory.
#[derive(Debug, Clone)]
pub struct Mirror {
    dir: PathBuf,
}

impl Mirror {
    /// Opens (without creating) a mirror directory.
    pub fn new(dir: &Path) -> Mirror {
        Mirror { dir: dir.to_path_buf() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Absolute path of a layout path.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Reads a file; `None` when absent.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(rel);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes a file atomically.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.write_with(rel, |f| f.write_all(bytes).map_err(Into::into))
    }

    /// Writes a file atomically from a writer callback.
    pub fn write_with(&self, rel: &str, fill: impl FnOnce(&mut fs::File) -> Result<()>) -> Result<()> {
        let path = self.path(rel);
        let parent = path.parent().context("mirror path has no parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(parent).with_context(|| format!("writing into {}", parent.display()))?;
        fill(tmp.as_file_mut())?;
        // Everything on a mirror is public and signed; a web server running as another user
        // must be able to read it (a temporary file starts as 0600).
        tmp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).with_context(|| format!("renaming into {}", path.display()))?;
        fs::File::open(parent)?.sync_all()?;
        Ok(())
    }

    /// The highest `trust/root.<n>` present.
    pub fn highest_root_version(&self) -> Result<Option<u64>> {
        let dir = self.path("trust");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut best = None;
        for entry in entries {
            let name = entry?.file_name();
            if let Some(n) = name.to_str().and_then(|n| n.strip_prefix("root.")).and_then(|n| n.parse::<u64>().ok()) {
                best = best.max(Some(n));
            }
        }
        Ok(best)
    }

    /// Verifies the whole trust history from `root.1` (or from `start`) and returns the
    /// newest root.
    pub fn trusted_root(&self, start: Option<&[u8]>, limits: &Limits) -> Result<VerifiedRoot> {
        let first = match start {
            Some(b) => b.to_vec(),
            None => self.read(&layout::root_path(1))?.with_context(|| {
                format!("{} has no trust/root.1: run `bundler trust init` first", self.dir.display())
            })?,
        };
        let root = VerifiedRoot::provisioned(&first, limits).context("verifying the first trust root")?;
        let walk_limits = Limits { max_roots_walked: u64::MAX / 2, ..limits.clone() };
        let root = root
            .walk(|n| self.read(&layout::root_path(n)), &walk_limits)
            .context("walking the mirror's trust roots")?;
        Ok(root)
    }

    /// The verified channel index, if the channel exists.
    pub fn index(
        &self,
        root: &VerifiedRoot,
        channel: &ChannelName,
        limits: &Limits,
    ) -> Result<Option<Verified<ChannelIndex>>> {
        let rel = layout::index_path(channel);
        match self.read(&rel)? {
            None => Ok(None),
            Some(bytes) => {
                let index = root.verify_index(&bytes, limits).with_context(|| format!("verifying {rel}"))?;
                if &index.channel != channel {
                    bail!("{rel} is signed for channel {}", index.channel);
                }
                Ok(Some(index))
            }
        }
    }

    /// The channel index a signer continues from (its version and latest release): verified
    /// under the newest trust root, or — right after a rotation replaced the index keys —
    /// under the newest earlier root of the mirror's history that signed it. Devices never
    /// take that old index; the signer only needs its numbers, which a root vouched for.
    pub fn index_to_resign(
        &self,
        root: &VerifiedRoot,
        channel: &ChannelName,
        limits: &Limits,
    ) -> Result<Option<Verified<ChannelIndex>>> {
        let current = match self.index(root, channel, limits) {
            Ok(index) => return Ok(index),
            Err(e) => e,
        };
        let mut history = vec![VerifiedRoot::provisioned(
            &self.read(&layout::root_path(1))?.context("the mirror has no trust/root.1")?,
            limits,
        )?];
        while let Some(last) = history.last().filter(|r| r.version() < root.version()) {
            let n = last.version() + 1;
            let bytes = self.read(&layout::root_path(n))?.with_context(|| format!("trust/root.{n} is missing"))?;
            let next = last.rotate(&bytes, limits).with_context(|| format!("verifying trust/root.{n}"))?;
            history.push(next);
        }
        for old in history.iter().rev().skip(1) {
            if let Ok(Some(index)) = self.index(old, channel, limits) {
                eprintln!(
                    "bundler: note: {} was signed under trust root {} (index keys rotated since); continuing from its version {}",
                    layout::index_path(channel),
                    old.version(),
                    index.version
                );
                return Ok(Some(index));
            }
        }
        Err(current)
    }

    /// A verified manifest by digest.
    pub fn manifest(
        &self,
        root: &VerifiedRoot,
        digest: &Sha256Digest,
        limits: &Limits,
    ) -> Result<Verified<ReleaseManifest>> {
        let rel = layout::manifest_path(digest);
        let bytes = self.read(&rel)?.with_context(|| format!("{} is missing {rel}", self.dir.display()))?;
        if Sha256Digest::of(&bytes) != *digest {
            bail!("{rel} does not hash to its name");
        }
        root.verify_manifest(&bytes, limits).with_context(|| format!("verifying {rel}"))
    }
}
