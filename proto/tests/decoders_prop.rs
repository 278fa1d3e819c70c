//! Property tests for every decoder, run in CI (the fuzz targets in `fuzz/` explore the
//! same properties for longer): arbitrary bytes never panic and never exceed the limits;
//! encode/decode round trips; a single flipped byte in a signed document never verifies;
//! decompression stops at its cap.

use std::collections::BTreeMap;
use std::io::Read;

use ferry_proto::bundle_header::{read_bundle_header, BundleHeader};
use ferry_proto::container::ContainerHeader;
use ferry_proto::envelope::{decode_document, encode_document};
use ferry_proto::index::LatestRelease;
use ferry_proto::manifest::{PayloadKind, PayloadRef, Source};
use ferry_proto::names::{check_label_key, check_label_value};
use ferry_proto::payload::{drain, open_bundle};
use ferry_proto::report::{DeviceStatus, ReportBatch, ReportRecord, REPORT_FORMAT};
use ferry_proto::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Limits small enough that arbitrary inputs reach them.
fn small_limits() -> Limits {
    Limits {
        max_envelope: 512,
        max_signatures: 2,
        max_bundle_header: 256,
        max_bundle_lines: 4,
        max_decompressed: 1 << 20,
        min_decompressed_allowance: 4 << 10,
        ..Limits::default()
    }
}

fn oid_strategy(format: ObjectFormat) -> impl Strategy<Value = GitOid> {
    proptest::collection::vec(any::<u8>(), 32).prop_map(move |bytes| {
        let hex = hex::encode(bytes);
        hex[..format.hex_len()].parse().expect("hex is an object id")
    })
}

fn format_strategy() -> impl Strategy<Value = ObjectFormat> {
    prop_oneof![Just(ObjectFormat::Sha1), Just(ObjectFormat::Sha256)]
}

fn channel_strategy() -> impl Strategy<Value = ChannelName> {
    "[a-z0-9][a-z0-9_-]{0,20}".prop_map(|s| s.parse().expect("matches the channel rules"))
}

fn manifest_strategy() -> impl Strategy<Value = ReleaseManifest> {
    format_strategy().prop_flat_map(|format| {
        (
            channel_strategy(),
            1u64..1000,
            (oid_strategy(format), oid_strategy(format), oid_strategy(format)),
            proptest::option::of(any::<u64>()),
            proptest::collection::btree_map("[a-z.]{1,8}", "[ -~]{0,12}", 0..3),
            proptest::collection::vec((any::<bool>(), any::<u64>(), any::<[u8; 32]>(), oid_strategy(format)), 1..4),
            ".{0,16}",
        )
            .prop_map(move |(channel, release, (commit, tree, source), not_after, labels, payloads, repo)| {
                ReleaseManifest {
                    format: 1,
                    channel,
                    release,
                    source: Source { repo, reference: "refs/heads/main".into(), commit: source, path: None },
                    snapshot_commit: commit,
                    snapshot_tree: tree,
                    object_format: format,
                    created: 1_700_000_000,
                    not_after,
                    require_labels: labels,
                    payloads: payloads
                        .into_iter()
                        .map(|(delta, size, sha, base)| PayloadRef {
                            kind: if delta {
                                PayloadKind::Delta { from_release: release.saturating_sub(1), base_commit: base }
                            } else {
                                PayloadKind::Full
                            },
                            size,
                            sha256: Sha256Digest(sha),
                        })
                        .collect(),
                }
            })
    })
}

fn index_strategy() -> impl Strategy<Value = ChannelIndex> {
    (
        channel_strategy(),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of((any::<u64>(), any::<[u8; 32]>())),
        0u8..=100,
        any::<bool>(),
    )
        .prop_map(|(channel, version, expires, latest, rollout_percent, halted)| ChannelIndex {
            format: 1,
            channel,
            version,
            created: 1,
            expires,
            latest: latest.map(|(release, d)| LatestRelease { release, manifest_sha256: Sha256Digest(d) }),
            rollout_percent,
            halted,
        })
}

fn batch_strategy(device: PublicKey) -> impl Strategy<Value = ReportBatch> {
    (
        ".{0,12}",
        proptest::collection::btree_set(any::<u64>(), 0..5),
        proptest::collection::vec(("[a-z-]{1,10}", proptest::option::of("[a-z-]{1,10}"), ".{0,20}"), 5),
        any::<u64>(),
        proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9]{0,5}"), 0..3),
    )
        .prop_map(move |(device_id, seqs, texts, dropped, labels)| ReportBatch {
            format: REPORT_FORMAT,
            device_id,
            device_key: device,
            created: 1_700_000_000,
            dropped,
            status: DeviceStatus { channel: "stable".into(), labels, health: "healthy".into(), ..Default::default() },
            records: seqs
                .into_iter()
                .zip(texts)
                .map(|(seq, (kind, reason, message))| ReportRecord {
                    seq,
                    at: seq / 2,
                    kind,
                    release: Some(seq % 7),
                    reason,
                    message,
                })
                .collect(),
        })
}

fn header_strategy() -> impl Strategy<Value = BundleHeader> {
    (prop_oneof![Just(2u8), Just(3u8)], format_strategy()).prop_flat_map(|(version, format)| {
        let format = if version == 2 { ObjectFormat::Sha1 } else { format };
        (
            proptest::collection::vec(oid_strategy(format), 0..3),
            proptest::collection::vec(
                (oid_strategy(format), "refs/(heads|tags|ferry)/[a-z0-9]{1,8}(/[0-9]{1,3})?"),
                1..3,
            ),
        )
            .prop_map(move |(prerequisites, refs)| BundleHeader {
                version,
                object_format: format,
                prerequisites,
                refs,
            })
    })
}

fn render(h: &BundleHeader) -> String {
    let mut out = format!("# v{} git bundle\n", h.version);
    if h.version == 3 {
        out.push_str(&format!("@object-format={}\n", h.object_format));
    }
    for p in &h.prerequisites {
        out.push_str(&format!("-{p} some subject\n"));
    }
    for (oid, name) in &h.refs {
        out.push_str(&format!("{oid} {name}\n"));
    }
    out.push('\n');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the envelope decoder accepts is within its limits and re-encodes to a fixed
    /// point; every document decoder round-trips what it accepts from the payload.
    #[test]
    fn envelope_decode_respects_limits(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let l = small_limits();
        if let Ok(env) = Envelope::decode(&bytes, &l) {
            prop_assert!(bytes.len() <= l.max_envelope);
            prop_assert!(env.signatures.len() <= l.max_signatures);
            let again = Envelope::decode(&env.encode(), &l).expect("re-encoded envelope decodes");
            prop_assert_eq!(&again, &env);
            prop_assert_eq!(again.encode(), env.encode());
        }
        if let Ok(doc) = decode_document::<ReportBatch>("b", &bytes) {
            prop_assert_eq!(decode_document::<ReportBatch>("b", &encode_document(&doc)).ok(), Some(doc));
        }
        if let Ok(doc) = decode_document::<TrustRoot>("r", &bytes) {
            prop_assert_eq!(decode_document::<TrustRoot>("r", &encode_document(&doc)).ok(), Some(doc));
        }
    }

    /// Generated manifests and indexes survive encode/decode unchanged.
    #[test]
    fn documents_round_trip(m in manifest_strategy(), i in index_strategy()) {
        prop_assert_eq!(decode_document::<ReleaseManifest>("m", &m.to_bytes()).ok(), Some(m));
        prop_assert_eq!(decode_document::<ChannelIndex>("i", &i.to_bytes()).ok(), Some(i));
    }

    /// Report batches: sign/verify round trip, peek agrees, any flipped byte and any other
    /// key are refused.
    #[test]
    fn report_batches_verify_only_intact(
        (seed, batch) in any::<[u8; 32]>().prop_flat_map(|s| (Just(s), batch_strategy(key_from_seed(s).public()))),
        batch_and_flip in (any::<prop::sample::Index>(), 0u8..8),
    ) {
        let key = key_from_seed(seed);
        let other = key_from_seed([seed[0] ^ 1; 32]);
        let l = Limits::default();
        let bytes = batch.sign(&key);
        prop_assert_eq!(ReportBatch::verify(&bytes, &key.public(), &l).ok(), Some(batch.clone()));
        prop_assert_eq!(ReportBatch::peek(&bytes, &l).ok(), Some(batch));
        prop_assert!(ReportBatch::verify(&bytes, &other.public(), &l).is_err());
        let (pos, bit) = batch_and_flip;
        let mut bad = bytes.clone();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(ReportBatch::verify(&bad, &key.public(), &l).is_err(), "flip at {} accepted", i);
    }

    /// `.ferry` headers: write/read round trip leaving the reader at the payload; every
    /// truncation refused; arbitrary bytes never yield a manifest over the limit.
    #[test]
    fn container_header_round_trip(
        manifest in proptest::collection::vec(any::<u8>(), 0..600),
        sha in any::<[u8; 32]>(),
        size in any::<u64>(),
        junk in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let l = small_limits();
        let h = ContainerHeader { manifest, payload_sha256: Sha256Digest(sha), payload_size: size };
        let mut buf = Vec::new();
        h.write_to(&mut buf).expect("write");
        prop_assert_eq!(buf.len() as u64, h.encoded_len());
        buf.extend_from_slice(b"payload");
        let mut r = &buf[..];
        match ContainerHeader::read_from(&mut r, &l) {
            Ok(read) => {
                prop_assert!(h.manifest.len() <= l.max_envelope);
                prop_assert_eq!(read, h.clone());
                prop_assert_eq!(r, b"payload");
            }
            Err(e) => {
                prop_assert!(h.manifest.len() > l.max_envelope, "{}", e);
                prop_assert_eq!(e.reason(), Reason::SizeExceeded);
            }
        }
        let cut = (size as usize) % (h.encoded_len() as usize);
        prop_assert!(ContainerHeader::read_from(&mut &buf[..cut], &l).is_err());
        let mut r = &junk[..];
        if let Ok(read) = ContainerHeader::read_from(&mut r, &l) {
            prop_assert!(read.manifest.len() <= l.max_envelope);
            prop_assert_eq!(read.encoded_len() as usize, junk.len() - r.len());
        }
    }

    /// Bundle headers: rendered headers parse back to themselves and leave the reader at
    /// the pack, through zstd too; arbitrary bytes never exceed the caps.
    #[test]
    fn bundle_headers_round_trip(h in header_strategy(), junk in proptest::collection::vec(any::<u8>(), 0..300)) {
        let l = Limits::default();
        let mut text = render(&h).into_bytes();
        text.extend_from_slice(b"PACK");
        let mut r = &text[..];
        prop_assert_eq!(read_bundle_header(&mut r, &l).ok(), Some(h.clone()));
        prop_assert_eq!(r, b"PACK");

        let compressed = zstd::bulk::compress(&text, 3).expect("compress");
        let (opened, mut stream) = open_bundle(Box::new(&compressed[..]), compressed.len() as u64, &l).expect("open");
        prop_assert_eq!(&opened, &h);
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("rest");
        prop_assert_eq!(rest, b"PACK");

        let small = small_limits();
        let mut r = &junk[..];
        if let Ok(parsed) = read_bundle_header(&mut r, &small) {
            prop_assert!(junk.len() - r.len() <= small.max_bundle_header);
            prop_assert!(parsed.refs.len() + parsed.prerequisites.len() <= small.max_bundle_lines);
            prop_assert!(!parsed.refs.is_empty());
        }
    }

    /// Arbitrary payload bytes: opening never panics and never decompresses past the cap.
    #[test]
    fn payload_never_exceeds_cap(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let l = small_limits();
        if let Ok((_, mut stream)) = open_bundle(Box::new(&bytes[..]), bytes.len() as u64, &l) {
            let _ = drain(&mut stream);
            prop_assert!(stream.get_ref().bytes_read() <= l.decompressed_cap(bytes.len() as u64));
        }
    }

    /// Key parsing: arbitrary text and arbitrary DER in PEM armour never panic; what loads
    /// writes PEM that loads back to the same key.
    #[test]
    fn keys_parse_or_refuse(text in ".{0,200}", der in proptest::collection::vec(any::<u8>(), 0..120), public in any::<bool>()) {
        let label = if public { "PUBLIC KEY" } else { "PRIVATE KEY" };
        let armoured = format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64(&der)
        );
        for t in [text.as_str(), armoured.as_str()] {
            if let Ok(k) = SigningKey::from_pem(t) {
                let again = SigningKey::from_pem(&k.to_pem().expect("pem")).expect("reload");
                prop_assert_eq!(again.public(), k.public());
            }
            if let Ok(k) = PublicKey::from_pem(t) {
                prop_assert_eq!(PublicKey::from_pem(&k.to_pem()).ok(), Some(k));
            }
        }
    }

    /// Names: what parses displays as given and keeps its rules; channel names make valid
    /// git refs (checked by gix-validate, an independent implementation).
    #[test]
    fn names_parse_consistently(s in "[a-zA-Z0-9._/ -]{0,70}|[0-9a-f]{40}|[0-9a-f]{64}|.{0,20}") {
        if let Ok(c) = s.parse::<ChannelName>() {
            prop_assert_eq!(c.as_str(), s.as_str());
            let reference = format!("refs/ferry/{c}/1");
            prop_assert!(gix_validate::reference::name(reference.as_bytes().into()).is_ok(), "{}", reference);
            prop_assert_eq!(decode_document::<ChannelName>("c", &encode_document(&c)).ok(), Some(c));
        }
        if let Ok(o) = s.parse::<GitOid>() {
            prop_assert_eq!(o.as_str(), s.as_str());
            prop_assert_eq!(o.format().hex_len(), s.len());
            prop_assert_eq!(decode_document::<GitOid>("o", &encode_document(&o)).ok(), Some(o));
        }
        if let Ok(d) = s.parse::<Sha256Digest>() {
            prop_assert_eq!(d.to_hex(), s.clone());
        }
        if check_label_key(&s).is_ok() {
            prop_assert!(!s.is_empty() && s.len() <= 64 && !s.contains('/') && !s.contains(' '));
        }
        if check_label_value(&s).is_ok() {
            prop_assert!(s.len() <= 256 && !s.chars().any(char::is_control));
        }
    }
}

/// A zstd bomb: 16 MiB of zeros compresses to a few hundred bytes; opening it under the
/// default ratio and a small absolute cap fails once the cap is passed, never later.
#[test]
fn zstd_bomb_stops_at_the_cap() {
    let mut text = render(&BundleHeader {
        version: 2,
        object_format: ObjectFormat::Sha1,
        prerequisites: vec![],
        refs: vec![("a".repeat(40).parse().expect("oid"), "refs/heads/main".into())],
    })
    .into_bytes();
    text.resize(16 << 20, 0);
    let compressed = zstd::bulk::compress(&text, 19).expect("compress");
    assert!(compressed.len() < 4096, "bomb is {} bytes", compressed.len());
    let l = Limits { min_decompressed_allowance: 1 << 20, ..Limits::default() };
    let cap = l.decompressed_cap(compressed.len() as u64);
    assert_eq!(cap, 1 << 20);
    let (_, mut stream) = open_bundle(Box::new(&compressed[..]), compressed.len() as u64, &l).expect("header");
    let err = drain(&mut stream).expect_err("bomb must be stopped");
    assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
    assert!(stream.get_ref().bytes_read() <= cap + (128 << 10));
}

/// A manifest signed by its release key, then any single flipped byte: never verifies.
#[test]
fn flipped_manifest_bytes_never_verify() {
    let root_key = fixed_key();
    let release = key_from_seed([9; 32]);
    let role = |k: &SigningKey| Role { keys: vec![k.public().id()], threshold: 1 };
    let root = TrustRoot {
        format: 1,
        version: 1,
        created: 0,
        keys: vec![root_key.public(), release.public()],
        root: role(&root_key),
        release: role(&release),
        index: role(&release),
    };
    let l = Limits::default();
    let root = VerifiedRoot::provisioned(&Envelope::sign(DocKind::Root, root.to_bytes(), &[&root_key]).encode(), &l)
        .expect("root");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let m = manifest_strategy().new_tree(&mut runner).expect("strategy").current();
    let bytes = Envelope::sign(DocKind::Manifest, m.to_bytes(), &[&release]).encode();
    assert_eq!(&*root.verify_manifest(&bytes, &l).expect("intact manifest verifies"), &m);
    let mut labels = BTreeMap::new();
    labels.extend(m.require_labels.clone());
    assert!(m.check_policy(&m.channel, None, 0, &labels).is_ok());
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x04;
        assert!(root.verify_manifest(&bad, &l).is_err(), "flip at {i} accepted");
    }
}

/// PKCS#8 v1 DER prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Standard base64 with padding (proto has no base64 dependency; PEM bodies need it).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn key_from_seed(seed: [u8; 32]) -> SigningKey {
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let body = base64(&der);
    SigningKey::from_pem(&format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")).expect("key")
}

fn fixed_key() -> SigningKey {
    key_from_seed([7; 32])
}
