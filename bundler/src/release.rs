//! `bundler release`: turns a git ref into a signed release on a mirror.
//!
//! Steps, in the order a mirror reader can tolerate (content-addressed files first, the
//! channel index last, so a poller never sees an index naming files that are not there):
//! 1. verify the mirror's trust history and that the keys given hold the roles;
//! 2. read the channel index for the next release number;
//! 3. make the deterministic orphan snapshot and record `refs/ferry/<channel>/<n>`;
//! 4. write the full payload and thin deltas from the last N releases (zstd over an
//!    uncompressed pack), each hashed while written;
//! 5. sign the manifest and write `releases/<sha256>.manifest`;
//! 6. write each `payloads/<sha256>.ferry`;
//! 7. sign and write the new channel index.

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_proto::container::ContainerHeader;
use ferry_proto::index::{ChannelIndex, LatestRelease};
use ferry_proto::manifest::{PayloadKind, PayloadRef, Source};
use ferry_proto::{layout, ChannelName, DocKind, Envelope, GitOid, Limits, ReleaseManifest, Sha256Digest};
use std::collections::BTreeMap;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use crate::git::Git;
use crate::keyfile;
use crate::mirror::Mirror;

/// `bundler release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The operator's git repository.
    #[arg(long)]
    repo: PathBuf,
    /// The ref (branch, tag or commit) to release.
    #[arg(long = "ref", value_name = "REF")]
    reference: String,
    /// Release only this sub-directory of the ref's tree.
    #[arg(long)]
    path: Option<String>,
    /// Channel name (a-z, 0-9, '.', '_', '-').
    #[arg(long)]
    channel: ChannelName,
    /// Mirror directory to publish into.
    #[arg(long)]
    mirror: PathBuf,
    /// Private key of the `release` role (repeat for a role that needs several signatures).
    #[arg(long, required = true)]
    release_key: Vec<PathBuf>,
    /// Private key of the `index` role (repeat likewise).
    #[arg(long, required = true)]
    index_key: Vec<PathBuf>,
    /// Make thin deltas from this many previous releases.
    #[arg(long, default_value_t = 3)]
    deltas: u64,
    /// How long the channel index stays valid (devices refuse it after).
    #[arg(long, default_value = "7d", value_parser = crate::clock::parse_duration)]
    expires: Duration,
    /// Devices may not apply the release after this long (default: no limit).
    #[arg(long, value_parser = crate::clock::parse_duration)]
    not_after: Option<Duration>,
    /// Only devices with this label take the release (KEY=VALUE, repeatable).
    #[arg(long = "require-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    require_labels: Vec<(String, String)>,
    /// Start a staged rollout: the share of devices (0-100 %) that may take this release;
    /// widen it later with `bundler rollout`.
    #[arg(long, value_name = "PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
    rollout: u8,
    /// zstd compression level (1-22).
    #[arg(long, default_value_t = crate::payload::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    /// Keep large changed files inside the deltas' git packs instead of sending them as
    /// binary (bsdiff) patches after the pack. Deltas then stay plain git bundles that
    /// `git fetch` accepts, but a rebuilt binary costs several times more bytes.
    #[arg(long)]
    no_binary_patches: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    ferry_proto::names::check_label_key(k).map_err(|e| e.to_string())?;
    ferry_proto::names::check_label_value(v).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

/// One payload written to a temporary file, ready to be placed in the mirror.
struct BuiltPayload {
    entry: PayloadRef,
    bundle_size: u64,
    /// Large files sent as binary patches (deltas).
    patched: usize,
    file: tempfile::NamedTempFile,
}

/// Runs `bundler release`.
pub fn run(args: &ReleaseArgs) -> Result<()> {
    let limits = Limits::default();
    let mirror = Mirror::new(&args.mirror);
    // Step 1: trust and keys.
    let root = mirror.trusted_root(None, &limits)?;
    let release_keys = keyfile::load_role_keys(&args.release_key, &root.root().release, "release")?;
    let index_keys = keyfile::load_role_keys(&args.index_key, &root.root().index, "index")?;

    // Step 2: the next release number.
    let old_index = mirror.index_to_resign(&root, &args.channel, &limits)?;
    let previous = old_index.as_ref().and_then(|i| i.latest.as_ref().map(|l| l.release)).unwrap_or(0);
    let number = previous + 1;

    // Step 3: the snapshot.
    let git = Git::open(&args.repo)?;
    let format = git.object_format()?;
    let source_commit = git.resolve_commit(&args.reference)?;
    let tree = git.tree_at(&source_commit, args.path.as_deref())?;
    let snapshot = git.make_snapshot(&tree, &source_commit, args.channel.as_str(), number, args.path.as_deref())?;
    let refname = format!("refs/ferry/{}/{number}", args.channel);
    git.update_ref(&refname, &snapshot)?;

    // Step 4: payloads.
    let mut built = vec![build_payload(&git, &snapshot, &refname, None, args)?];
    for base_release in previous.saturating_sub(args.deltas) + 1..=previous {
        let base_ref = format!("refs/ferry/{}/{base_release}", args.channel);
        let Some(base) = git.read_ref(&base_ref)? else {
            eprintln!("note: no {base_ref} in {}; no delta from release {base_release}", args.repo.display());
            continue;
        };
        let mut payload = build_payload(&git, &snapshot, &refname, Some(&base), args)?;
        payload.entry.kind = PayloadKind::Delta { from_release: base_release, base_commit: oid(&base)? };
        built.push(payload);
    }

    // Step 5: the manifest.
    let now = crate::clock::now()?;
    let manifest = ReleaseManifest {
        format: ferry_proto::manifest::MANIFEST_FORMAT,
        channel: args.channel.clone(),
        release: number,
        source: Source {
            repo: args.repo.display().to_string(),
            reference: args.reference.clone(),
            commit: oid(&source_commit)?,
            path: crate::git::normalize_tree_path(args.path.as_deref())?,
        },
        snapshot_commit: oid(&snapshot)?,
        snapshot_tree: oid(&tree)?,
        object_format: format.as_str().parse()?,
        created: now,
        not_after: args.not_after.map(|d| now + d.as_secs()),
        require_labels: args.require_labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        payloads: built.iter().map(|b| b.entry.clone()).collect(),
    };
    let signers: Vec<&ferry_proto::SigningKey> = release_keys.iter().collect();
    let manifest_bytes = Envelope::sign(DocKind::Manifest, manifest.to_bytes(), &signers).encode();
    root.verify_manifest(&manifest_bytes, &limits).context("the signed manifest does not verify")?;
    let manifest_digest = Sha256Digest::of(&manifest_bytes);
    mirror.write(&layout::manifest_path(&manifest_digest), &manifest_bytes)?;

    // Step 6: the .ferry files.
    for payload in &mut built {
        write_ferry(&mirror, &manifest_bytes, payload)?;
    }

    // Step 7: the channel index.
    let index = ChannelIndex {
        format: ferry_proto::index::INDEX_FORMAT,
        channel: args.channel.clone(),
        version: old_index.as_ref().map(|i| i.version + 1).unwrap_or(1),
        created: now,
        expires: now + args.expires.as_secs(),
        latest: Some(LatestRelease { release: number, manifest_sha256: manifest_digest }),
        rollout_percent: args.rollout,
        halted: false,
    };
    crate::index_cmd::write_index(&mirror, &root, &index_keys, &index, &limits)?;

    println!("release {number} of channel {} published to {}", args.channel, args.mirror.display());
    println!("  source    {} {} ({})", args.reference, source_commit, args.path.as_deref().unwrap_or("/"));
    println!("  snapshot  {snapshot} as {refname}");
    for p in &built {
        let kind = match &p.entry.kind {
            PayloadKind::Full => "full".to_string(),
            PayloadKind::Delta { from_release, .. } => format!("delta from {from_release}"),
        };
        println!(
            "  {kind:<14} {:>12} bytes (bundle {} bytes, ratio {:.2}x)  payloads/{}",
            p.entry.size,
            p.bundle_size,
            p.bundle_size as f64 / p.entry.size.max(1) as f64,
            p.entry.file_name()
        );
        if p.patched > 0 {
            println!("  {:<14} {} large file(s) sent as binary patches after the pack", "", p.patched);
        }
    }
    println!("  index     version {} expires {}", index.version, crate::clock::rfc3339(index.expires));
    if index.rollout_percent < 100 {
        println!("  rollout   {}% of devices (widen with `bundler rollout`)", index.rollout_percent);
    }
    Ok(())
}

fn oid(hex: &str) -> Result<GitOid> {
    hex.parse().with_context(|| format!("git printed an unexpected object id {hex:?}"))
}

/// Writes the bundle, compresses it into a temporary file and hashes the result.
fn build_payload(
    git: &Git,
    snapshot: &str,
    refname: &str,
    base: Option<&str>,
    args: &ReleaseArgs,
) -> Result<BuiltPayload> {
    let mut bundle = tempfile::tempfile().context("creating a temporary file")?;
    let base = base.map(|commit| crate::payload::Base { commit, binary_patches: !args.no_binary_patches });
    let written = crate::payload::write_bundle(git, snapshot, refname, base, &mut bundle)?;
    let bundle_size = written.bytes;
    bundle.seek(SeekFrom::Start(0))?;
    let mut file = tempfile::NamedTempFile::new().context("creating a temporary file")?;
    let bar = crate::progress::bytes(if base.is_some() { "delta" } else { "full" }, Some(bundle_size));
    let mut input = bar.wrap_read(BufReader::new(bundle));
    let mut hashing = HashingWriter { inner: file.as_file_mut(), digest: ferry_proto::digest::DigestWriter::default() };
    crate::payload::compress_sized(&mut input, Some(bundle_size), &mut hashing, args.level)
        .context("compressing the bundle")?;
    bar.finish_and_clear();
    let size = hashing.digest.len();
    let sha256 = hashing.digest.finish();
    Ok(BuiltPayload {
        entry: PayloadRef { kind: PayloadKind::Full, size, sha256 },
        bundle_size,
        patched: written.patched,
        file,
    })
}

struct HashingWriter<'a> {
    inner: &'a mut std::fs::File,
    digest: ferry_proto::digest::DigestWriter,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_ferry(mirror: &Mirror, manifest_bytes: &[u8], payload: &mut BuiltPayload) -> Result<()> {
    let rel = layout::payload_path(&payload.entry.sha256);
    if mirror.path(&rel).exists() {
        bail!("{rel} already exists in the mirror; payloads are immutable and a new release never repeats one");
    }
    let header = ContainerHeader {
        manifest: manifest_bytes.to_vec(),
        payload_sha256: payload.entry.sha256,
        payload_size: payload.entry.size,
    };
    let source = payload.file.as_file_mut();
    source.seek(SeekFrom::Start(0))?;
    mirror.write_with(&rel, |out| {
        header.write_to(out)?;
        std::io::copy(source, out)?;
        Ok(())
    })
}
