//! `bundler inspect PATH`: prints any Ferry document as JSON (trust root, manifest, channel
//! index, report batch, or a `.ferry` file's header and manifest). Nothing is verified
//! here; `bundler verify` does that.

use anyhow::{bail, Context, Result};
use ferry_proto::container::{ContainerHeader, MAGIC};
use ferry_proto::envelope::{decode_document, Envelope};
use ferry_proto::index::ChannelIndex;
use ferry_proto::{DocKind, Limits, ReleaseManifest, TrustRoot};
use serde_json::{json, Value};
use std::fs;
use std::io::Read;
use std::path::Path;

/// Runs `bundler inspect`.
pub fn run(path: &Path) -> Result<()> {
    let limits = Limits::default();
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 8];
    let n = file.read(&mut magic)?;
    let value = if n == 8 && magic == MAGIC {
        let mut file = fs::File::open(path)?;
        let header =
            ContainerHeader::read_from(&mut file, &limits).with_context(|| format!("reading {}", path.display()))?;
        json!({
            "type": "ferry",
            "verified": false,
            "payload_sha256": header.payload_sha256.to_hex(),
            "payload_size": header.payload_size,
            "manifest": envelope_json(&header.manifest, &limits)?,
        })
    } else {
        let len = fs::metadata(path)?.len();
        if len > limits.max_envelope as u64 {
            bail!("{} is {len} bytes: too large for a Ferry document", path.display());
        }
        envelope_json(&fs::read(path)?, &limits)
            .with_context(|| format!("{} is not a Ferry document", path.display()))?
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn envelope_json(bytes: &[u8], limits: &Limits) -> Result<Value> {
    let env = Envelope::decode(bytes, limits)?;
    let document = match env.kind {
        DocKind::Root => serde_json::to_value(decode_document::<TrustRoot>("trust root", &env.payload)?)?,
        DocKind::Manifest => serde_json::to_value(decode_document::<ReleaseManifest>("manifest", &env.payload)?)?,
        DocKind::Index => serde_json::to_value(decode_document::<ChannelIndex>("channel index", &env.payload)?)?,
        DocKind::ReportBatch => json!({ "payload_bytes": env.payload.len() }),
    };
    Ok(json!({
        "type": env.kind,
        "verified": false,
        "sha256": ferry_proto::Sha256Digest::of(bytes).to_hex(),
        "signatures": env.signatures.iter().map(|s| s.key_id.to_hex()).collect::<Vec<_>>(),
        "document": document,
    }))
}
