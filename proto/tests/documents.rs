//! Round trips, tampering, cross-document replay, thresholds and root rotation.

use std::collections::BTreeMap;

use ferry_proto::envelope::EnvelopeError;
use ferry_proto::index::LatestRelease;
use ferry_proto::manifest::{PayloadKind, PayloadRef, Source};
use ferry_proto::trust::TrustError;
use ferry_proto::*;
use proptest::prelude::*;

struct Fixture {
    root_keys: Vec<SigningKey>,
    release: SigningKey,
    index: SigningKey,
    root: VerifiedRoot,
    root_bytes: Vec<u8>,
}

fn role(keys: &[&SigningKey], threshold: u32) -> Role {
    Role { keys: keys.iter().map(|k| k.public().id()).collect(), threshold }
}

fn make_root(
    version: u64,
    root_keys: &[&SigningKey],
    threshold: u32,
    release: &SigningKey,
    index: &SigningKey,
) -> TrustRoot {
    let mut keys: Vec<PublicKey> = root_keys.iter().map(|k| k.public()).collect();
    keys.push(release.public());
    keys.push(index.public());
    TrustRoot {
        format: 1,
        version,
        created: 1_700_000_000,
        keys,
        root: role(root_keys, threshold),
        release: role(&[release], 1),
        index: role(&[index], 1),
    }
}

fn fixture() -> Fixture {
    let root_keys: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate().expect("rng")).collect();
    let release = SigningKey::generate().expect("rng");
    let index = SigningKey::generate().expect("rng");
    let refs: Vec<&SigningKey> = root_keys.iter().collect();
    let doc = make_root(1, &refs, 2, &release, &index);
    let root_bytes = Envelope::sign(DocKind::Root, doc.to_bytes(), &refs[..2]).encode();
    let root = VerifiedRoot::provisioned(&root_bytes, &Limits::default()).expect("provisioned root");
    Fixture { root_keys, release, index, root, root_bytes }
}

fn manifest() -> ReleaseManifest {
    let oid = |c: char| c.to_string().repeat(40).parse::<GitOid>().expect("oid");
    ReleaseManifest {
        format: 1,
        channel: "stable".parse().expect("channel"),
        release: 7,
        source: Source {
            repo: "/srv/fleet".into(),
            reference: "main".into(),
            commit: oid('a'),
            path: Some("site".into()),
        },
        snapshot_commit: oid('b'),
        snapshot_tree: oid('c'),
        object_format: ObjectFormat::Sha1,
        created: 1_700_000_000,
        not_after: Some(1_800_000_000),
        require_labels: BTreeMap::from([("site".to_string(), "plant7".to_string())]),
        payloads: vec![
            PayloadRef { kind: PayloadKind::Full, size: 1234, sha256: Sha256Digest::of(b"full") },
            PayloadRef {
                kind: PayloadKind::Delta { from_release: 6, base_commit: oid('d') },
                size: 99,
                sha256: Sha256Digest::of(b"delta"),
            },
        ],
    }
}

fn index() -> ChannelIndex {
    ChannelIndex {
        format: 1,
        channel: "stable".parse().expect("channel"),
        version: 12,
        created: 1_700_000_000,
        expires: 1_700_086_400,
        latest: Some(LatestRelease { release: 7, manifest_sha256: Sha256Digest::of(b"m") }),
        rollout_percent: 100,
        halted: false,
    }
}

#[test]
fn every_document_round_trips() {
    let f = fixture();
    assert_eq!(f.root.version(), 1);
    let m = manifest();
    let mb = Envelope::sign(DocKind::Manifest, m.to_bytes(), &[&f.release]).encode();
    let vm = f.root.verify_manifest(&mb, &Limits::default()).expect("manifest verifies");
    assert_eq!(*vm, m);
    assert_eq!(vm.digest(), Sha256Digest::of(&mb));
    let i = index();
    let ib = Envelope::sign(DocKind::Index, i.to_bytes(), &[&f.index]).encode();
    assert_eq!(*f.root.verify_index(&ib, &Limits::default()).expect("index verifies"), i);
    // JSON (what `bundler inspect` prints) round-trips and shows digests and keys as hex.
    let json = serde_json::to_string(&m).expect("json");
    assert!(json.contains(&Sha256Digest::of(b"full").to_hex()));
    assert_eq!(serde_json::from_str::<ReleaseManifest>(&json).expect("from json"), m);
    let root_json = serde_json::to_string(f.root.root()).expect("json");
    assert!(root_json.contains(&f.release.public().id().to_hex()));
    assert_eq!(serde_json::from_str::<TrustRoot>(&root_json).expect("from json"), *f.root.root());
}

#[test]
fn signature_over_one_kind_does_not_verify_as_another() {
    let f = fixture();
    // The index key signs a manifest-shaped payload as an index; relabelled as a manifest it must fail.
    let both = SigningKey::generate().expect("rng");
    let refs: Vec<&SigningKey> = f.root_keys.iter().collect();
    let mut doc = make_root(1, &refs, 2, &both, &both);
    doc.keys.pop();
    let root_bytes = Envelope::sign(DocKind::Root, doc.to_bytes(), &refs[..2]).encode();
    let root = VerifiedRoot::provisioned(&root_bytes, &Limits::default()).expect("root");
    let mut env = Envelope::sign(DocKind::Index, manifest().to_bytes(), &[&both]);
    env.kind = DocKind::Manifest;
    let err = root.verify_manifest(&env.encode(), &Limits::default()).expect_err("replayed across kinds");
    assert_eq!(err.reason(), Reason::Signature);
    // And a correctly labelled envelope of the wrong kind is refused too.
    let env = Envelope::sign(DocKind::Index, index().to_bytes(), &[&both]);
    let err = root.verify_manifest(&env.encode(), &Limits::default()).expect_err("wrong kind");
    assert!(matches!(err, EnvelopeError::WrongKind { .. }));
}

#[test]
fn manifest_signed_by_index_key_is_refused() {
    let f = fixture();
    let mb = Envelope::sign(DocKind::Manifest, manifest().to_bytes(), &[&f.index]).encode();
    assert_eq!(f.root.verify_manifest(&mb, &Limits::default()).expect_err("wrong role").reason(), Reason::Signature);
}

#[test]
fn one_key_twice_does_not_meet_threshold_two() {
    let f = fixture();
    let refs: Vec<&SigningKey> = f.root_keys.iter().collect();
    let doc = make_root(1, &refs, 2, &f.release, &f.index);
    let mut env = Envelope::sign(DocKind::Root, doc.to_bytes(), &[refs[0]]);
    let dup = env.signatures[0].clone();
    env.signatures.push(dup);
    let err = VerifiedRoot::provisioned(&env.encode(), &Limits::default()).expect_err("duplicate signature");
    assert_eq!(err.reason(), Reason::Threshold);
    assert!(matches!(err, TrustError::Envelope(EnvelopeError::BelowThreshold { valid: 1, threshold: 2, .. })));
}

#[test]
fn rotation_rules() {
    let f = fixture();
    let old: Vec<&SigningKey> = f.root_keys.iter().collect();
    let new_keys: Vec<SigningKey> = (0..2).map(|_| SigningKey::generate().expect("rng")).collect();
    let new: Vec<&SigningKey> = new_keys.iter().collect();
    let next = make_root(2, &new, 2, &f.release, &f.index);
    let l = Limits::default();

    // Signed by old threshold and new threshold: accepted.
    let good = Envelope::sign(DocKind::Root, next.to_bytes(), &[old[0], old[1], new[0], new[1]]).encode();
    let v2 = f.root.rotate(&good, &l).expect("valid rotation");
    assert_eq!(v2.version(), 2);

    // Only the new keys: the old root never approved it.
    let only_new = Envelope::sign(DocKind::Root, next.to_bytes(), &[new[0], new[1]]).encode();
    assert_eq!(f.root.rotate(&only_new, &l).expect_err("only new").reason(), Reason::Signature);
    // Old threshold but below the new root's own threshold.
    let half_new = Envelope::sign(DocKind::Root, next.to_bytes(), &[old[0], old[1], new[0]]).encode();
    assert_eq!(f.root.rotate(&half_new, &l).expect_err("half new").reason(), Reason::Threshold);
    // Skipping a version.
    let skip = make_root(3, &new, 2, &f.release, &f.index);
    let skip = Envelope::sign(DocKind::Root, skip.to_bytes(), &[old[0], old[1], new[0], new[1]]).encode();
    assert!(matches!(f.root.rotate(&skip, &l), Err(TrustError::NotNext { current: 1, found: 3 })));
    // Same version replayed.
    assert!(matches!(f.root.rotate(&f.root_bytes, &l), Err(TrustError::NotNext { .. })));

    // Walking: finds 2, stops at a missing 3.
    let walked = f.root.clone().walk(|n| Ok::<_, String>((n == 2).then(|| good.clone())), &l).expect("walk");
    assert_eq!(walked.version(), 2);
}

#[test]
fn walk_stops_at_the_cap() {
    let f = fixture();
    let l = Limits { max_roots_walked: 5, ..Limits::default() };
    let keys: Vec<&SigningKey> = f.root_keys.iter().collect();
    let chain: Vec<Vec<u8>> = (2..=10)
        .map(|v| Envelope::sign(DocKind::Root, make_root(v, &keys, 2, &f.release, &f.index).to_bytes(), &keys).encode())
        .collect();
    let err = f.root.clone().walk(|n| Ok::<_, String>(chain.get((n - 2) as usize).cloned()), &l).expect_err("cap");
    assert!(matches!(err, TrustError::TooManyRoots { cap: 5 }));
}

#[test]
fn policy_checks() {
    let m = manifest();
    let ch: ChannelName = "stable".parse().expect("channel");
    let labels = BTreeMap::from([("site".to_string(), "plant7".to_string())]);
    assert!(m.check_policy(&ch, Some(6), 1_750_000_000, &labels).is_ok());
    let reason = |r: Result<(), ferry_proto::manifest::PolicyError>| r.expect_err("refused").reason();
    assert_eq!(reason(m.check_policy(&"beta".parse().expect("c"), None, 0, &labels)), Reason::WrongChannel);
    assert_eq!(reason(m.check_policy(&ch, Some(7), 0, &labels)), Reason::Rollback);
    assert_eq!(reason(m.check_policy(&ch, None, 1_900_000_000, &labels)), Reason::Expired);
    assert_eq!(reason(m.check_policy(&ch, None, 0, &BTreeMap::new())), Reason::NotTargeted);
    let i = index();
    assert!(i.check_policy(&ch, 12, 1_700_000_001).is_ok());
    assert_eq!(i.check_policy(&ch, 13, 1_700_000_001).expect_err("rollback").reason(), Reason::Rollback);
    assert_eq!(i.check_policy(&ch, 1, 1_800_000_000).expect_err("expired").reason(), Reason::Expired);
}

#[test]
fn oversized_envelope_is_refused_before_decoding() {
    let f = fixture();
    let big = vec![0u8; (1 << 20) + 1];
    assert_eq!(f.root.verify_manifest(&big, &Limits::default()).expect_err("big").reason(), Reason::SizeExceeded);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Flipping any single bit of any signed document is refused, never accepted.
    #[test]
    fn any_flipped_byte_is_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8, which in 0usize..3) {
        let f = fixture();
        let l = Limits::default();
        let bytes = match which {
            0 => f.root_bytes.clone(),
            1 => Envelope::sign(DocKind::Manifest, manifest().to_bytes(), &[&f.release]).encode(),
            _ => Envelope::sign(DocKind::Index, index().to_bytes(), &[&f.index]).encode(),
        };
        let mut bad = bytes.clone();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        let reason = match which {
            0 => VerifiedRoot::provisioned(&bad, &l).map(|_| ()).map_err(|e| e.reason()),
            1 => f.root.verify_manifest(&bad, &l).map(|_| ()).map_err(|e| e.reason()),
            _ => f.root.verify_index(&bad, &l).map(|_| ()).map_err(|e| e.reason()),
        };
        let reason = reason.expect_err("tampered document accepted");
        prop_assert!(
            matches!(reason, Reason::Signature | Reason::Threshold | Reason::Malformed | Reason::Unsupported | Reason::SizeExceeded | Reason::TrustRoot),
            "unexpected reason {reason}"
        );
    }

    /// Arbitrary bytes never panic the decoders.
    #[test]
    fn decoders_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let f = fixture();
        let l = Limits::default();
        let _ = VerifiedRoot::provisioned(&bytes, &l);
        let _ = f.root.verify_manifest(&bytes, &l);
        let _ = f.root.verify_index(&bytes, &l);
        let _ = ferry_proto::container::ContainerHeader::read_from(&mut &bytes[..], &l);
        let _ = ferry_proto::bundle_header::read_bundle_header(&mut &bytes[..], &l);
    }
}
