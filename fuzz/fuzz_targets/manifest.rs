//! Release manifests: `VerifiedRoot::verify_manifest` on the second part of the input,
//! under a root provisioned from the first part (seeds: real bundler mirrors).
//!
//! Properties: a verified manifest only comes out of a threshold of valid `release`
//! signatures (independent oracle), has a supported format, object ids matching its object
//! format, a release number and a payload; its digest is the SHA-256 of the bytes received;
//! flipping one byte makes verification fail; policy and bundle checks never panic.
#![no_main]

use std::collections::BTreeMap;

use ferry_fuzz::{assert_alloc_bound, assert_flip_harmless, assert_signed, fuzz_limits, peak_during, pick, split};
use ferry_proto::bundle_header::BundleHeader;
use ferry_proto::envelope::decode_document;
use ferry_proto::manifest::{PayloadKind, MANIFEST_FORMAT};
use ferry_proto::{DocKind, Envelope, ReleaseManifest, Sha256Digest, VerifiedRoot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let Some((root, doc)) = split(data) else { return };
    let Ok(root) = VerifiedRoot::provisioned(root, &limits) else { return };
    let (verified, peak) = peak_during(|| root.verify_manifest(doc, &limits));
    assert_alloc_bound("manifest", peak, doc.len(), 0);
    let m = match verified {
        Ok(m) => m,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    let env = Envelope::decode(doc, &limits).expect("decodes");
    assert_signed(&env, DocKind::Manifest, &root.root().release, &root.root().key_map());
    assert_eq!(decode_document::<ReleaseManifest>("m", &env.payload).ok().as_ref(), Some(&*m));
    assert_eq!(m.digest(), Sha256Digest::of(doc));
    assert_eq!(m.envelope_bytes(), doc);
    assert_eq!(m.format, MANIFEST_FORMAT);
    assert!(m.release >= 1 && !m.payloads.is_empty());
    assert_eq!(m.snapshot_commit.format(), m.object_format);
    assert_eq!(m.snapshot_tree.format(), m.object_format);
    for p in &m.payloads {
        if let PayloadKind::Delta { base_commit, .. } = &p.kind {
            assert_eq!(base_commit.format(), m.object_format);
        }
        assert_eq!(m.payload(&p.sha256).map(|q| q.sha256), Some(p.sha256));
        assert!(p.file_name().ends_with(".ferry"));
    }

    let mut flipped = doc.to_vec();
    let at = pick(data, flipped.len());
    flipped[at] ^= 0x20;
    assert_flip_harmless(doc, &flipped, root.verify_manifest(&flipped, &limits).is_ok());

    let labels: BTreeMap<String, String> = m.require_labels.clone();
    assert!(m.check_policy(&m.channel, Some(m.release - 1), 0, &labels).is_ok(), "a verified release is refused");
    assert!(m.check_policy(&m.channel, Some(m.release), 0, &labels).is_err(), "replay of an applied release");
    for p in &m.payloads {
        let prerequisites = match &p.kind {
            PayloadKind::Full => vec![],
            PayloadKind::Delta { base_commit, .. } => vec![base_commit.clone()],
        };
        let header = BundleHeader {
            version: 3,
            object_format: m.object_format,
            prerequisites,
            refs: vec![(m.snapshot_commit.clone(), m.snapshot_ref())],
        };
        assert!(m.check_bundle(p, &header).is_ok(), "the bundle header the manifest describes is refused");
        let mut other = header.clone();
        other.refs.push((m.snapshot_tree.clone(), "refs/heads/x".into()));
        assert!(m.check_bundle(p, &other).is_err());
    }
});
