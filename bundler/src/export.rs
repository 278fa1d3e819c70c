//! `bundler export`: copies what a USB stick needs for one channel into a directory in
//! the mirror layout: the whole trust history, the channel index, the latest manifest, its
//! full payload and its deltas. Every file is verified before it is copied.

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_proto::{layout, ChannelName, Limits};
use std::fs;
use std::path::PathBuf;

use crate::mirror::Mirror;

/// `bundler export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Mirror directory to copy from.
    #[arg(long)]
    mirror: PathBuf,
    /// Channel to export.
    #[arg(long)]
    channel: ChannelName,
    /// Destination (e.g. the `ferry/` directory on a mounted USB stick).
    #[arg(long)]
    to: PathBuf,
}

/// Runs `bundler export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    let limits = Limits::default();
    let src = Mirror::new(&args.mirror);
    let dst = Mirror::new(&args.to);
    let root = src.trusted_root(None, &limits)?;
    let index = src
        .index(&root, &args.channel, &limits)?
        .with_context(|| format!("channel {} has no index in {}", args.channel, args.mirror.display()))?;
    let latest = index.latest.as_ref().context("the channel index names no release")?;
    let manifest = src.manifest(&root, &latest.manifest_sha256, &limits)?;

    let mut copied = 0u64;
    let mut copy = |rel: String| -> Result<()> {
        let from = src.path(&rel);
        let mut input = fs::File::open(&from).with_context(|| format!("opening {}", from.display()))?;
        dst.write_with(&rel, |out| {
            copied += std::io::copy(&mut input, out)?;
            Ok(())
        })
    };
    for v in 1..=root.version() {
        copy(layout::root_path(v))?;
    }
    for payload in &manifest.payloads {
        let rel = layout::payload_path(&payload.sha256);
        if let Err(r) = crate::verify::verify_ferry_file(&src.path(&rel), &root, &limits) {
            bail!("{rel} does not verify ({}: {}); not exporting", r.reason, r.message);
        }
        copy(rel)?;
    }
    copy(layout::manifest_path(&latest.manifest_sha256))?;
    copy(layout::index_path(&args.channel))?;
    println!(
        "exported channel {} release {} ({} payloads, {} bytes) to {}",
        args.channel,
        latest.release,
        manifest.payloads.len(),
        copied,
        args.to.display()
    );
    Ok(())
}
