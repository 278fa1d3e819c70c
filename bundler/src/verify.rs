//! `bundler verify --trust ROOT PATH`: checks a `.ferry` file or a whole mirror exactly
//! as a device would, and prints `OK` or the typed reason for each item.
//!
//! Order matters and mirrors the device: the payload's digest and size are checked over
//! the whole file before a single byte is decompressed or parsed as a bundle.

use anyhow::{Context, Result};
use clap::Args;
use ferry_proto::container::ContainerHeader;
use ferry_proto::digest::VerifyingReader;
use ferry_proto::manifest::PayloadKind;
use ferry_proto::{layout, ChannelName, Limits, Reason, VerifiedRoot};
use std::fs;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::mirror::Mirror;

/// `bundler verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The trust root a device is provisioned with (e.g. `MIRROR/trust/root.1`).
    #[arg(long)]
    trust: PathBuf,
    /// A `.ferry` file, or a mirror directory.
    path: PathBuf,
    /// Judge expiry at this Unix time instead of now.
    #[arg(long)]
    at: Option<u64>,
}

/// A refusal with its typed reason.
#[derive(Debug)]
pub struct Rejection {
    /// The reason code.
    pub reason: Reason,
    /// What happened, for a person.
    pub message: String,
}

impl Rejection {
    fn new(reason: Reason, message: impl std::fmt::Display) -> Rejection {
        Rejection { reason, message: message.to_string() }
    }
}

/// What a verified `.ferry` file holds.
pub struct FerrySummary {
    /// Channel.
    pub channel: ChannelName,
    /// Release number.
    pub release: u64,
    /// Human description of the payload kind.
    pub kind: String,
    /// Payload bytes.
    pub size: u64,
}

/// Runs `bundler verify`; returns false when anything was rejected.
pub fn run(args: &VerifyArgs) -> Result<bool> {
    let limits = Limits::default();
    let trust = fs::read(&args.trust).with_context(|| format!("reading trust root {}", args.trust.display()))?;
    let provisioned = VerifiedRoot::provisioned(&trust, &limits)
        .map_err(|e| anyhow::anyhow!("trust root {} is not usable: {}: {e}", args.trust.display(), e.reason()))?;
    let now = match args.at {
        Some(t) => t,
        None => crate::clock::now()?,
    };
    if args.path.is_dir() {
        return Ok(verify_mirror(&args.path, provisioned, now, &limits));
    }
    Ok(report(&args.path.display().to_string(), verify_ferry_file(&args.path, &provisioned, &limits)))
}

fn report(what: &str, result: Result<FerrySummary, Rejection>) -> bool {
    match result {
        Ok(s) => {
            println!("OK {what}: channel {} release {} ({}, {} bytes)", s.channel, s.release, s.kind, s.size);
            true
        }
        Err(r) => {
            println!("REJECTED {what}: {}: {}", r.reason, r.message);
            false
        }
    }
}

fn verify_mirror(dir: &Path, provisioned: VerifiedRoot, now: u64, limits: &Limits) -> bool {
    let mirror = Mirror::new(dir);
    let root = match provisioned.walk(|n| mirror.read(&layout::root_path(n)), limits) {
        Ok(r) => r,
        Err(e) => {
            println!("REJECTED trust: {}: {e}", e.reason());
            return false;
        }
    };
    println!("OK trust: root version {}", root.version());
    let mut ok = true;
    let channels = fs::read_dir(mirror.path("channels")).into_iter().flatten().flatten();
    for entry in channels {
        let name = entry.file_name().to_string_lossy().into_owned();
        ok &= verify_channel(&mirror, &root, &name, now, limits);
    }
    ok
}

fn verify_channel(mirror: &Mirror, root: &VerifiedRoot, name: &str, now: u64, limits: &Limits) -> bool {
    let what = format!("channel {name}");
    let result = (|| -> Result<Vec<PathBuf>, Rejection> {
        let channel: ChannelName = name.parse().map_err(|e| Rejection::new(Reason::Malformed, e))?;
        let bytes = mirror
            .read(&layout::index_path(&channel))
            .map_err(|e| Rejection::new(Reason::Io, format!("{e:#}")))?
            .ok_or_else(|| Rejection::new(Reason::Malformed, "no index file"))?;
        let index = root.verify_index(&bytes, limits).map_err(|e| Rejection::new(e.reason(), e))?;
        index.check_policy(&channel, 0, now).map_err(|e| Rejection::new(e.reason(), e))?;
        let Some(latest) = &index.latest else {
            return Ok(vec![]);
        };
        let manifest = mirror
            .manifest(root, &latest.manifest_sha256, limits)
            .map_err(|e| Rejection::new(Reason::Signature, format!("{e:#}")))?;
        if manifest.release != latest.release || manifest.channel != channel {
            return Err(Rejection::new(Reason::DigestMismatch, "index and manifest disagree on channel or release"));
        }
        println!(
            "OK {what}: index version {} expires {}, release {}",
            index.version,
            crate::clock::rfc3339(index.expires),
            latest.release
        );
        Ok(manifest.payloads.iter().map(|p| mirror.path(&layout::payload_path(&p.sha256))).collect())
    })();
    match result {
        Err(r) => {
            println!("REJECTED {what}: {}: {}", r.reason, r.message);
            false
        }
        Ok(files) => {
            let mut ok = true;
            for f in files {
                let shown = f.strip_prefix(mirror.dir()).unwrap_or(&f).display().to_string();
                ok &= report(&shown, verify_ferry_file(&f, root, limits));
            }
            ok
        }
    }
}

/// Verifies one `.ferry` file: manifest signature, payload size and digest, then the
/// decompressed bundle header against the manifest.
pub fn verify_ferry_file(path: &Path, root: &VerifiedRoot, limits: &Limits) -> Result<FerrySummary, Rejection> {
    let io = |e: std::io::Error| Rejection::new(Reason::Io, format!("{}: {e}", path.display()));
    let mut file = BufReader::new(fs::File::open(path).map_err(io)?);
    let header = ContainerHeader::read_from(&mut file, limits).map_err(|e| Rejection::new(e.reason(), e))?;
    let (manifest, entry) = header.verify(root, limits).map_err(|e| Rejection::new(e.reason(), e))?;

    // Pass 1: size and digest over the whole payload.
    let start = header.encoded_len();
    let mut verifying = VerifyingReader::new(&mut file, entry.size, entry.sha256);
    std::io::copy(&mut verifying, &mut std::io::sink()).map_err(io)?;
    verifying.finish().map_err(|e| Rejection::new(e.reason(), e))?;

    // Pass 2: only now read it as a bundle.
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let payload: Box<dyn Read> = Box::new((&mut file).take(entry.size));
    let (bundle, mut stream) =
        ferry_proto::payload::open_bundle(payload, entry.size, limits).map_err(|e| Rejection::new(e.reason(), e))?;
    manifest.check_bundle(&entry, &bundle).map_err(|e| Rejection::new(Reason::DigestMismatch, e))?;
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).map_err(|e| Rejection::new(Reason::Malformed, format!("pack: {e}")))?;
    if &magic != b"PACK" {
        return Err(Rejection::new(Reason::Malformed, "bundle does not carry a pack"));
    }
    std::io::copy(&mut stream, &mut std::io::sink()).map_err(|e| {
        let reason =
            if e.kind() == std::io::ErrorKind::FileTooLarge { Reason::SizeExceeded } else { Reason::Malformed };
        Rejection::new(reason, format!("decompressing: {e}"))
    })?;
    let kind = match &entry.kind {
        PayloadKind::Full => "full".to_string(),
        PayloadKind::Delta { from_release, .. } => format!("delta from release {from_release}"),
    };
    Ok(FerrySummary { channel: manifest.channel.clone(), release: manifest.release, kind, size: entry.size })
}
