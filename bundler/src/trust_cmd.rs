//! `bundler trust init` and `bundler trust rotate`: the trust root ceremony.
//!
//! `init` writes `trust/root.1` signed by the root keys given. `rotate` writes root N+1,
//! signed by a threshold of root N's keys *and* of its own, and verifies the rotation
//! exactly as a device will before writing it.

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_proto::{layout, DocKind, Envelope, Limits, PublicKey, Role, SigningKey, TrustRoot, VerifiedRoot};
use std::path::PathBuf;

use crate::keyfile;
use crate::mirror::Mirror;

/// Keys and thresholds of the three roles.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// Private root key (repeat for several). All given keys sign.
    #[arg(long = "root-key", value_name = "KEY", required = true)]
    root_keys: Vec<PathBuf>,
    /// Additional root public key that does not sign now (repeat for several).
    #[arg(long = "root-pub", value_name = "KEY.pub")]
    root_pubs: Vec<PathBuf>,
    /// Root keys needed to sign a rotation.
    #[arg(long, default_value_t = 1)]
    root_threshold: u32,
    /// Release key, public or private file (repeat for several).
    #[arg(long = "release-pub", value_name = "KEY", required = true)]
    release_pubs: Vec<PathBuf>,
    /// Release keys needed to sign a manifest.
    #[arg(long, default_value_t = 1)]
    release_threshold: u32,
    /// Index key, public or private file (repeat for several).
    #[arg(long = "index-pub", value_name = "KEY", required = true)]
    index_pubs: Vec<PathBuf>,
    /// Index keys needed to sign a channel index.
    #[arg(long, default_value_t = 1)]
    index_threshold: u32,
}

/// `bundler trust init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Mirror directory to write `trust/root.1` into.
    #[arg(long)]
    mirror: PathBuf,
    #[command(flatten)]
    roles: RoleArgs,
}

/// `bundler trust rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Mirror directory holding the current trust history.
    #[arg(long)]
    mirror: PathBuf,
    /// Private key of the *current* root role (repeat until its threshold is met).
    #[arg(long = "old-root-key", value_name = "KEY", required = true)]
    old_root_keys: Vec<PathBuf>,
    #[command(flatten)]
    roles: RoleArgs,
}

struct BuiltRoot {
    doc: TrustRoot,
    signers: Vec<SigningKey>,
}

fn build_root(version: u64, roles: &RoleArgs) -> Result<BuiltRoot> {
    let signers = roles.root_keys.iter().map(|p| keyfile::load_private(p)).collect::<Result<Vec<_>>>()?;
    let mut root_pubs: Vec<PublicKey> = signers.iter().map(SigningKey::public).collect();
    for p in &roles.root_pubs {
        root_pubs.push(keyfile::load_public(p)?);
    }
    let load = |paths: &[PathBuf]| paths.iter().map(|p| keyfile::load_public(p)).collect::<Result<Vec<_>>>();
    let release = load(&roles.release_pubs)?;
    let index = load(&roles.index_pubs)?;
    let role = |keys: &[PublicKey], threshold| Role { keys: keys.iter().map(PublicKey::id).collect(), threshold };
    let mut all: Vec<PublicKey> = Vec::new();
    for k in root_pubs.iter().chain(&release).chain(&index) {
        if !all.contains(k) {
            all.push(*k);
        }
    }
    let doc = TrustRoot {
        format: ferry_proto::trust::ROOT_FORMAT,
        version,
        created: crate::clock::now()?,
        keys: all,
        root: role(&root_pubs, roles.root_threshold),
        release: role(&release, roles.release_threshold),
        index: role(&index, roles.index_threshold),
    };
    doc.check().context("the trust root would be inconsistent")?;
    Ok(BuiltRoot { doc, signers })
}

/// Runs `trust init`.
pub fn init(args: &InitArgs) -> Result<()> {
    let mirror = Mirror::new(&args.mirror);
    if let Some(v) = mirror.highest_root_version()? {
        bail!("{} already has trust/root.{v}; use `bundler trust rotate` to change keys", args.mirror.display());
    }
    let built = build_root(1, &args.roles)?;
    let signers: Vec<&SigningKey> = built.signers.iter().collect();
    let bytes = Envelope::sign(DocKind::Root, built.doc.to_bytes(), &signers).encode();
    VerifiedRoot::provisioned(&bytes, &Limits::default())
        .context("the new root is not signed by enough of its own root keys (add --root-key)")?;
    mirror.write(&layout::root_path(1), &bytes)?;
    print_root("created", &mirror, &built.doc);
    Ok(())
}

/// Runs `trust rotate`.
pub fn rotate(args: &RotateArgs) -> Result<()> {
    let mirror = Mirror::new(&args.mirror);
    let limits = Limits::default();
    let current = mirror.trusted_root(None, &limits)?;
    let built = build_root(current.version() + 1, &args.roles)?;
    let old = args.old_root_keys.iter().map(|p| keyfile::load_private(p)).collect::<Result<Vec<_>>>()?;
    let signers: Vec<&SigningKey> = old.iter().chain(&built.signers).collect();
    let bytes = Envelope::sign(DocKind::Root, built.doc.to_bytes(), &signers).encode();
    current
        .rotate(&bytes, &limits)
        .context("rotation would not verify on devices (need a threshold of the old and of the new root keys)")?;
    mirror.write(&layout::root_path(built.doc.version), &bytes)?;
    print_root("rotated to", &mirror, &built.doc);
    Ok(())
}

fn print_root(verb: &str, mirror: &Mirror, doc: &TrustRoot) {
    println!("{verb} trust root version {} in {}", doc.version, mirror.path(&layout::root_path(doc.version)).display());
    for (name, role) in [("root", &doc.root), ("release", &doc.release), ("index", &doc.index)] {
        let ids: Vec<String> = role.keys.iter().map(|k| k.to_hex()[..16].to_string()).collect();
        println!("  {name:<8} threshold {} of [{}]", role.threshold, ids.join(", "));
    }
}
