//! Trust roots: `VerifiedRoot::provisioned` on the first part of the input, then
//! `rotate` and `walk` to the second part (framed by `ferry_fuzz::join`).
//!
//! Properties: a root only comes out of a threshold of valid signatures by its own root
//! keys (checked by an independent oracle) and is internally consistent; a rotation only
//! succeeds with threshold signatures of both the old and the new root keys and exactly the
//! next version; flipping one byte of an accepted root makes it fail; allocation stays
//! within the envelope limit.
#![no_main]

use ferry_fuzz::{assert_alloc_bound, assert_flip_harmless, assert_signed, fuzz_limits, peak_during, pick, split};
use ferry_proto::envelope::decode_document;
use ferry_proto::{DocKind, Envelope, TrustRoot, VerifiedRoot};
use libfuzzer_sys::fuzz_target;

/// Checks what `provisioned` accepted against the oracle.
fn check_provisioned(bytes: &[u8], root: &VerifiedRoot) {
    let limits = fuzz_limits();
    let env = Envelope::decode(bytes, &limits).expect("accepted root decodes");
    let doc: TrustRoot = decode_document("trust root", &env.payload).expect("payload decodes");
    assert_eq!(&doc, root.root());
    assert_eq!(root.envelope_bytes(), bytes);
    assert!(doc.check().is_ok());
    assert!(doc.version >= 1);
    assert_signed(&env, DocKind::Root, &doc.root, &doc.key_map());
}

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let (first, second) = split(data).unwrap_or((data, &[]));
    let (root, peak) = peak_during(|| VerifiedRoot::provisioned(first, &limits));
    assert_alloc_bound("trust root", peak, first.len(), 0);
    let root = match root {
        Ok(root) => root,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    check_provisioned(first, &root);

    let mut flipped = first.to_vec();
    let at = pick(second, flipped.len());
    flipped[at] ^= 1 << (second.len() % 8);
    assert_flip_harmless(first, &flipped, VerifiedRoot::provisioned(&flipped, &limits).is_ok());

    let (next, peak) = peak_during(|| root.rotate(second, &limits));
    assert_alloc_bound("rotation", peak, second.len(), 0);
    match next {
        Ok(next) => {
            assert_eq!(next.version(), root.version() + 1);
            check_provisioned(second, &next);
            let env = Envelope::decode(second, &limits).expect("decodes");
            assert_signed(&env, DocKind::Root, &root.root().root, &root.root().key_map());
            let walked = root
                .clone()
                .walk(|v| Ok::<_, String>((v == next.version()).then(|| second.to_vec())), &limits)
                .expect("walk over an accepted rotation");
            assert_eq!(walked.version(), next.version());
        }
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            let walked =
                root.clone().walk(|v| Ok::<_, String>((v == root.version() + 1).then(|| second.to_vec())), &limits);
            assert!(walked.is_err(), "walk accepted a root that rotate refused");
        }
    }
});
