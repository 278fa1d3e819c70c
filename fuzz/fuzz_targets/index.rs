//! Channel indexes: `VerifiedRoot::verify_index` on the second part of the input, under a
//! root provisioned from the first part (seeds: real bundler mirrors).
//!
//! Properties: a verified index only comes out of a threshold of valid `index` signatures
//! (independent oracle), has a supported format and a rollout of at most 100 %; its digest
//! is the SHA-256 of the bytes received; flipping one byte makes verification fail; the
//! policy check refuses older versions and expired indexes.
#![no_main]

use ferry_fuzz::{assert_alloc_bound, assert_flip_harmless, assert_signed, fuzz_limits, peak_during, pick, split};
use ferry_proto::envelope::decode_document;
use ferry_proto::index::INDEX_FORMAT;
use ferry_proto::{ChannelIndex, DocKind, Envelope, Sha256Digest, VerifiedRoot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let Some((root, doc)) = split(data) else { return };
    let Ok(root) = VerifiedRoot::provisioned(root, &limits) else { return };
    let (verified, peak) = peak_during(|| root.verify_index(doc, &limits));
    assert_alloc_bound("index", peak, doc.len(), 0);
    let index = match verified {
        Ok(index) => index,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    let env = Envelope::decode(doc, &limits).expect("decodes");
    assert_signed(&env, DocKind::Index, &root.root().index, &root.root().key_map());
    assert_eq!(decode_document::<ChannelIndex>("i", &env.payload).ok().as_ref(), Some(&*index));
    assert_eq!(index.digest(), Sha256Digest::of(doc));
    assert_eq!(index.format, INDEX_FORMAT);
    assert!(index.rollout_percent <= 100);

    let mut flipped = doc.to_vec();
    let at = pick(data, flipped.len());
    flipped[at] ^= 0x01;
    assert_flip_harmless(doc, &flipped, root.verify_index(&flipped, &limits).is_ok());

    assert!(index.check_policy(&index.channel, index.version, index.expires).is_ok());
    if let Some(newer) = index.version.checked_add(1) {
        assert!(index.check_policy(&index.channel, newer, index.expires).is_err(), "older index accepted");
    }
    if let Some(later) = index.expires.checked_add(1) {
        assert!(index.check_policy(&index.channel, index.version, later).is_err(), "expired index accepted");
    }
});
