//! Structure-aware: documents generated with `arbitrary` (trust root, release manifest,
//! channel index, report batch), signed with fixed keys chosen by the input, then encoded,
//! decoded and verified.
//!
//! Properties: decode(encode(x)) == x for every document; verification succeeds exactly
//! when the oracle says it must (enough distinct authorised signers, the document's own
//! format rules hold) and fails on any single flipped byte of a document that verified.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use ferry_fuzz::{fixed_key, fuzz_limits};
use ferry_proto::envelope::{decode_document, encode_document};
use ferry_proto::index::LatestRelease;
use ferry_proto::manifest::{PayloadKind, PayloadRef, Source};
use ferry_proto::report::{DeviceStatus, ReportBatch, ReportRecord};
use ferry_proto::{
    ChannelIndex, ChannelName, DocKind, Envelope, GitOid, ObjectFormat, ReleaseManifest, Role, Sha256Digest,
    SigningKey, TrustRoot, VerifiedRoot,
};
use libfuzzer_sys::fuzz_target;

const KEYS: usize = 6;

fn keys() -> &'static [SigningKey] {
    static KEYS_CELL: OnceLock<Vec<SigningKey>> = OnceLock::new();
    KEYS_CELL.get_or_init(|| (0..KEYS as u8).map(|n| fixed_key(n + 1)).collect())
}

#[derive(Arbitrary, Debug)]
struct Input {
    root_keys: u8,
    root_threshold: u8,
    role_keys: Vec<u8>,
    role_threshold: u8,
    signers: Vec<u8>,
    flip: (u16, u8),
    doc: Doc,
}

#[derive(Arbitrary, Debug)]
enum Doc {
    Manifest(M),
    Index(I),
    Batch(B),
}

#[derive(Arbitrary, Debug)]
struct M {
    format: u32,
    channel: Vec<u8>,
    release: u64,
    repo: String,
    reference: String,
    ids: [(bool, [u8; 32]); 3],
    path: Option<String>,
    sha256: bool,
    created: u64,
    not_after: Option<u64>,
    labels: BTreeMap<String, String>,
    payloads: Vec<(Option<(u64, bool, [u8; 32])>, u64, [u8; 32])>,
}

#[derive(Arbitrary, Debug)]
struct I {
    format: u32,
    channel: Vec<u8>,
    version: u64,
    created: u64,
    expires: u64,
    latest: Option<(u64, [u8; 32])>,
    rollout_percent: u8,
    halted: bool,
}

#[derive(Arbitrary, Debug)]
struct B {
    format: u32,
    device_id: String,
    created: u64,
    dropped: u64,
    labels: Vec<(String, String)>,
    health: String,
    release: Option<u64>,
    records: Vec<(u64, u64, String, Option<u64>, Option<String>, String)>,
}

fn channel(raw: &[u8]) -> ChannelName {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-";
    let s: String = raw.iter().take(64).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    s.parse().unwrap_or_else(|_| "stable".parse().expect("stable is a channel name"))
}

fn oid(sha256: bool, bytes: &[u8; 32]) -> GitOid {
    let hex = hex_of(bytes);
    let len = if sha256 { 64 } else { 40 };
    hex[..len].parse().expect("hex is an object id")
}

fn hex_of(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Distinct key indices named by `raw`.
fn key_set(raw: &[u8]) -> BTreeSet<usize> {
    raw.iter().take(2 * KEYS).map(|b| usize::from(*b) % KEYS).collect()
}

fn role(ids: &BTreeSet<usize>, threshold: u8) -> Role {
    Role { keys: ids.iter().map(|i| keys()[*i].public().id()).collect(), threshold: u32::from(threshold % 4) }
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(doc: &T) -> Vec<u8> {
    let bytes = encode_document(doc);
    assert_eq!(decode_document::<T>("doc", &bytes).as_ref().ok(), Some(doc), "round trip");
    bytes
}

fuzz_target!(|input: Input| {
    let limits = fuzz_limits();
    let root_ids: BTreeSet<usize> = (0..1 + usize::from(input.root_keys) % 3).collect();
    let role_ids = key_set(&input.role_keys);
    let signer_ids = key_set(&input.signers);
    let root_role = role(&root_ids, input.root_threshold);
    let role = role(&role_ids, input.role_threshold);
    let (kind, doc_bytes, doc_ok) = match &input.doc {
        Doc::Manifest(m) => {
            let ids: Vec<GitOid> = m.ids.iter().map(|(s, b)| oid(*s, b)).collect();
            let format = if m.sha256 { ObjectFormat::Sha256 } else { ObjectFormat::Sha1 };
            let payloads: Vec<PayloadRef> = m
                .payloads
                .iter()
                .take(8)
                .map(|(delta, size, sha)| PayloadRef {
                    kind: match delta {
                        None => PayloadKind::Full,
                        Some((from, s, b)) => PayloadKind::Delta { from_release: *from, base_commit: oid(*s, b) },
                    },
                    size: *size,
                    sha256: Sha256Digest(*sha),
                })
                .collect();
            let doc = ReleaseManifest {
                format: m.format % 3,
                channel: channel(&m.channel),
                release: m.release % 4,
                source: Source {
                    repo: m.repo.clone(),
                    reference: m.reference.clone(),
                    commit: ids[2].clone(),
                    path: m.path.clone(),
                },
                snapshot_commit: ids[0].clone(),
                snapshot_tree: ids[1].clone(),
                object_format: format,
                created: m.created,
                not_after: m.not_after,
                require_labels: m.labels.clone(),
                payloads,
            };
            let bases_ok = doc.payloads.iter().all(|p| match &p.kind {
                PayloadKind::Delta { base_commit, .. } => base_commit.format() == format,
                PayloadKind::Full => true,
            });
            let ok = doc.format == 1
                && doc.snapshot_commit.format() == format
                && doc.snapshot_tree.format() == format
                && bases_ok
                && doc.release != 0
                && !doc.payloads.is_empty();
            (DocKind::Manifest, round_trip(&doc), ok)
        }
        Doc::Index(i) => {
            let doc = ChannelIndex {
                format: i.format % 3,
                channel: channel(&i.channel),
                version: i.version,
                created: i.created,
                expires: i.expires,
                latest: i.latest.map(|(release, d)| LatestRelease { release, manifest_sha256: Sha256Digest(d) }),
                rollout_percent: i.rollout_percent,
                halted: i.halted,
            };
            let ok = doc.format == 1 && doc.rollout_percent <= 100;
            (DocKind::Index, round_trip(&doc), ok)
        }
        Doc::Batch(b) => {
            let device = keys()[signer_ids.first().copied().unwrap_or(0)].public();
            let doc = ReportBatch {
                format: b.format % 3,
                device_id: b.device_id.clone(),
                device_key: device,
                created: b.created,
                dropped: b.dropped,
                status: DeviceStatus {
                    channel: "stable".into(),
                    labels: b.labels.clone(),
                    release: b.release,
                    health: b.health.clone(),
                    ..DeviceStatus::default()
                },
                records: b
                    .records
                    .iter()
                    .take(16)
                    .map(|(seq, at, kind, release, reason, message)| ReportRecord {
                        seq: *seq % 32,
                        at: *at,
                        kind: kind.clone(),
                        release: *release,
                        reason: reason.clone(),
                        message: message.clone(),
                    })
                    .collect(),
            };
            let bytes = round_trip(&doc);
            let signer = signer_ids.first().copied().unwrap_or(0);
            let env = Envelope::sign(DocKind::ReportBatch, bytes, &[&keys()[signer]]).encode();
            let ok = doc.format == 1 && doc.records.windows(2).all(|w| w[0].seq < w[1].seq);
            let result = ReportBatch::verify(&env, &device, &limits);
            if env.len() <= limits.max_envelope {
                assert_eq!(result.is_ok(), ok, "report batch: {result:?}");
            }
            if let Ok(batch) = result {
                assert_eq!(batch, doc);
                flip_fails(&env, input.flip, |bad| ReportBatch::verify(bad, &device, &limits).is_ok());
            }
            return;
        }
    };

    // A root listing every fixed key, signed by all of its root keys.
    let root = TrustRoot {
        format: 1,
        version: 1,
        created: 0,
        keys: keys().iter().map(|k| k.public()).collect(),
        root: root_role.clone(),
        release: role.clone(),
        index: role.clone(),
    };
    round_trip(&root);
    let root_signers: Vec<&SigningKey> = root_ids.iter().map(|i| &keys()[*i]).collect();
    let root_env = Envelope::sign(DocKind::Root, root.to_bytes(), &root_signers).encode();
    let root_ok = root.check().is_ok();
    let verified_root = VerifiedRoot::provisioned(&root_env, &limits);
    assert_eq!(verified_root.is_ok(), root_ok, "root: {:?}", verified_root.as_ref().err());
    let Ok(verified_root) = verified_root else { return };

    let signers: Vec<&SigningKey> = signer_ids.iter().map(|i| &keys()[*i]).collect();
    let env = Envelope::sign(kind, doc_bytes, &signers).encode();
    if env.len() > limits.max_envelope {
        return;
    }
    let authorised = signer_ids.intersection(&role_ids).count();
    let expect_ok = doc_ok && authorised >= role.threshold.max(1) as usize;
    let verify = |bytes: &[u8]| match kind {
        DocKind::Manifest => verified_root.verify_manifest(bytes, &limits).map(|_| ()),
        _ => verified_root.verify_index(bytes, &limits).map(|_| ()),
    };
    let result = verify(&env);
    assert_eq!(result.is_ok(), expect_ok, "{}: {result:?} with {authorised} authorised signer(s)", kind.name());
    if result.is_ok() {
        flip_fails(&env, input.flip, |bad| verify(bad).is_ok());
    }
});

/// Flips one bit: the result may only verify if the document itself is unchanged (the
/// flip hit a signature the threshold did not need).
fn flip_fails(bytes: &[u8], (at, bit): (u16, u8), verifies: impl Fn(&[u8]) -> bool) {
    let mut bad = bytes.to_vec();
    let i = usize::from(at) % bad.len();
    bad[i] ^= 1 << (bit % 8);
    ferry_fuzz::assert_flip_harmless(bytes, &bad, verifies(&bad));
}
