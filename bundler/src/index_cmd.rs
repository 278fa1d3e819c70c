//! `bundler index refresh`: re-signs a channel index with a later expiry and the next
//! version, changing nothing else. Run it from a timer well inside the expiry so devices
//! never see a frozen channel.

use anyhow::{Context, Result};
use clap::Args;
use ferry_proto::index::ChannelIndex;
use ferry_proto::{layout, ChannelName, DocKind, Envelope, Limits};
use std::path::PathBuf;
use std::time::Duration;

use crate::keyfile;
use crate::mirror::Mirror;

/// Which channel index to re-sign, where, with which keys and for how long: shared by
/// `bundler index refresh` and `bundler rollout`.
#[derive(Debug, Args)]
pub struct IndexSigning {
    /// Mirror directory.
    #[arg(long)]
    pub mirror: PathBuf,
    /// The channel.
    #[arg(long)]
    pub channel: ChannelName,
    /// Private key of the `index` role (repeat for a role that needs several signatures).
    #[arg(long, required = true)]
    index_key: Vec<PathBuf>,
    /// New validity of the index, from now.
    #[arg(long, default_value = "7d", value_parser = crate::clock::parse_duration)]
    expires: Duration,
}

/// `bundler index refresh`.
#[derive(Debug, Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    signing: IndexSigning,
}

/// Runs `bundler index refresh`.
pub fn refresh(args: &RefreshArgs) -> Result<()> {
    let (_, index) = resign(&args.signing, |_| Ok(()))?;
    println!(
        "channel {} index version {} expires {}",
        index.channel,
        index.version,
        crate::clock::rfc3339(index.expires)
    );
    Ok(())
}

/// Re-signs the channel's index as the next version, valid from now, after `change` has
/// adjusted it (given the old one verified); returns the old and the new index.
pub fn resign(
    args: &IndexSigning,
    change: impl FnOnce(&mut ChannelIndex) -> Result<()>,
) -> Result<(ChannelIndex, ChannelIndex)> {
    let limits = Limits::default();
    let mirror = Mirror::new(&args.mirror);
    let root = mirror.trusted_root(None, &limits)?;
    let keys = keyfile::load_role_keys(&args.index_key, &root.root().index, "index")?;
    let old = mirror.index_to_resign(&root, &args.channel, &limits)?.with_context(|| {
        format!("channel {} has no index in {} yet: publish a release first", args.channel, args.mirror.display())
    })?;
    let old = (*old).clone();
    let now = crate::clock::now()?;
    let mut index =
        ChannelIndex { version: old.version + 1, created: now, expires: now + args.expires.as_secs(), ..old.clone() };
    change(&mut index)?;
    write_index(&mirror, &root, &keys, &index, &limits)?;
    Ok((old, index))
}

/// Signs, self-verifies and writes a channel index.
pub fn write_index(
    mirror: &Mirror,
    root: &ferry_proto::VerifiedRoot,
    keys: &[ferry_proto::SigningKey],
    index: &ChannelIndex,
    limits: &Limits,
) -> Result<()> {
    let bytes = Envelope::sign(DocKind::Index, index.to_bytes(), &keys.iter().collect::<Vec<_>>()).encode();
    root.verify_index(&bytes, limits).context("the signed index does not verify")?;
    mirror.write(&layout::index_path(&index.channel), &bytes)
}
