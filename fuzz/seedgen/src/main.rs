//! Seed corpora for the fuzz targets, made from a real mirror written by `bundler` (see
//! `fuzz/seeds`): `seedgen MIRROR KEYS_DIR CORPUS_DIR`. Report batches, which only devices
//! make, are signed here with the fixed device key the `report` target verifies against.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ferry_proto::container::ContainerHeader;
use ferry_proto::envelope::decode_document;
use ferry_proto::report::{DeviceStatus, ReportBatch, ReportRecord, REPORT_FORMAT};
use ferry_proto::{Envelope, ReleaseManifest, Sha256Digest};

#[allow(dead_code)]
#[path = "../../src/shared.rs"]
mod shared;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Corpus(PathBuf);

impl Corpus {
    /// Writes `bytes` into `<corpus>/<target>/`, named by content.
    fn add(&self, target: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.0.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(format!("seed-{}", &Sha256Digest::of(bytes).to_hex()[..16])), bytes)?;
        Ok(())
    }
}

fn files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if dir.is_dir() {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() && path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn report_batches() -> Vec<Vec<u8>> {
    let key = shared::fixed_key(shared::DEVICE_KEY);
    let record = |seq: u64, kind: &str, reason: Option<&str>| ReportRecord {
        seq,
        at: 1_700_000_000 + seq,
        kind: kind.into(),
        release: Some(seq),
        reason: reason.map(Into::into),
        message: format!("{kind} {seq}"),
    };
    let status = DeviceStatus {
        channel: "stable".into(),
        labels: vec![("site".into(), "plant-7".into())],
        release: Some(2),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        slot: Some("a".into()),
        health: "healthy".into(),
        last_failure: Some("hook-failed".into()),
        drift_paths: 1,
        paused: false,
    };
    let batch = |records: Vec<ReportRecord>, dropped| ReportBatch {
        format: REPORT_FORMAT,
        device_id: "pump-17".into(),
        device_key: key.public(),
        created: 1_700_000_100,
        dropped,
        status: status.clone(),
        records,
    };
    vec![
        batch(vec![], 0).sign(&key),
        batch(vec![record(1, "agent-start", None)], 0).sign(&key),
        batch(
            vec![record(4, "fetched", None), record(5, "rejected", Some("signature")), record(9, "applied", None)],
            3,
        )
        .sign(&key),
    ]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mirror, keys, out] = &args[..] else {
        return Err("usage: seedgen MIRROR KEYS_DIR CORPUS_DIR".into());
    };
    let mirror = Path::new(mirror);
    let corpus = Corpus(PathBuf::from(out));
    let limits = ferry_proto::Limits::default();

    let mut roots: Vec<(u64, Vec<u8>)> = Vec::new();
    for path in files(&mirror.join("trust"), "")? {
        let version = path.extension().and_then(|e| e.to_str()).and_then(|e| e.parse().ok()).unwrap_or(0);
        roots.push((version, fs::read(&path)?));
    }
    roots.sort();
    let (_, root) = roots.last().ok_or("the mirror has no trust root")?.clone();
    for pair in roots.windows(2) {
        corpus.add("trust_root", &shared::join(&pair[0].1, &pair[1].1))?;
    }
    for (_, r) in &roots {
        corpus.add("trust_root", &shared::join(r, b""))?;
        corpus.add("envelope", r)?;
    }

    for path in files(&mirror.join("releases"), ".manifest")? {
        let bytes = fs::read(&path)?;
        corpus.add("envelope", &bytes)?;
        corpus.add("manifest", &shared::join(&root, &bytes))?;
        let env = Envelope::decode(&bytes, &limits)?;
        let m: ReleaseManifest = decode_document("release manifest", &env.payload)?;
        let mut names = vec![m.channel.to_string(), m.snapshot_commit.to_string(), m.snapshot_tree.to_string()];
        names.push(m.object_format.to_string());
        names.extend(m.payloads.iter().map(|p| p.sha256.to_hex()));
        names.extend(m.require_labels.iter().flat_map(|(k, v)| [k.clone(), v.clone()]));
        for name in names {
            corpus.add("names", name.as_bytes())?;
        }
    }
    let channels = mirror.join("channels");
    if channels.is_dir() {
        for entry in fs::read_dir(&channels)? {
            let index = entry?.path().join("index");
            if index.is_file() {
                let bytes = fs::read(&index)?;
                corpus.add("envelope", &bytes)?;
                corpus.add("index", &shared::join(&root, &bytes))?;
            }
        }
    }

    for path in files(&mirror.join("payloads"), ".ferry")? {
        let file = fs::read(&path)?;
        corpus.add("container", &shared::join(&root, &file))?;
        let mut rest = &file[..];
        let _header = ContainerHeader::read_from(&mut rest, &limits)?;
        let mut compressed = vec![0u8];
        compressed.extend_from_slice(rest);
        corpus.add("payload", &compressed)?;
        let mut plain = Vec::new();
        zstd::stream::read::Decoder::new(rest)?.read_to_end(&mut plain)?;
        let header_end = plain.windows(2).position(|w| w == b"\n\n").map_or(plain.len(), |p| p + 2);
        let prefix = &plain[..(header_end + 32).min(plain.len())];
        corpus.add("bundle_header", prefix)?;
        // pack_import: the object count, "append the checksum", then the entries.
        let pack = &plain[header_end.min(plain.len())..];
        if pack.len() > 32 && pack.len() < 8192 {
            let mut seed = vec![pack[11], 1];
            seed.extend_from_slice(&pack[12..pack.len() - 20]);
            corpus.add("pack_import", &seed)?;
        }
        let mut odd = vec![1u8];
        odd.extend_from_slice(prefix);
        corpus.add("payload", &odd)?;
    }

    for batch in report_batches() {
        corpus.add("report", &batch)?;
        corpus.add("envelope", &batch)?;
    }

    for path in files(Path::new(keys), "")? {
        let text = fs::read(&path)?;
        let mut seed = vec![0u8];
        seed.extend_from_slice(&text);
        corpus.add("keys", &seed)?;
        let body: String = String::from_utf8_lossy(&text).lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body.trim())?;
        let public = String::from_utf8_lossy(&text).contains("PUBLIC");
        let mut seed = vec![1u8, u8::from(public)];
        seed.extend_from_slice(&der);
        corpus.add("keys", &seed)?;
    }
    Ok(())
}
