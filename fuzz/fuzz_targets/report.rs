//! Device report batches: `ReportBatch::peek` and `ReportBatch::verify` against the fixed
//! device key the seeds are signed with.
//!
//! Properties: a verified batch only comes out of a valid signature by that key (oracle),
//! names that key, has strictly increasing records and equals what `peek` saw; signing it
//! again verifies to the same batch; flipping one byte makes verification fail; another
//! key never verifies it; allocation stays within a small multiple of the input.
#![no_main]

use ferry_fuzz::{
    assert_alloc_bound, assert_flip_harmless, assert_signed, fixed_key, fuzz_limits, peak_during, pick, DEVICE_KEY,
};
use ferry_proto::report::{ReportBatch, REPORT_FORMAT};
use ferry_proto::{DocKind, Envelope, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let key = fixed_key(DEVICE_KEY);
    let public = key.public();
    let (peeked, peak) = peak_during(|| ReportBatch::peek(data, &limits));
    assert_alloc_bound("report peek", peak, data.len(), 0);
    let (verified, peak) = peak_during(|| ReportBatch::verify(data, &public, &limits));
    assert_alloc_bound("report verify", peak, data.len(), 0);
    let batch = match verified {
        Ok(batch) => batch,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    let env = Envelope::decode(data, &limits).expect("decodes");
    let role = Role { keys: vec![public.id()], threshold: 1 };
    let keys = [(public.id(), public)].into_iter().collect();
    assert_signed(&env, DocKind::ReportBatch, &role, &keys);
    assert_eq!(peeked.ok().as_ref(), Some(&batch), "peek and verify disagree");
    assert_eq!(batch.device_key, public);
    assert_eq!(batch.format, REPORT_FORMAT);
    assert!(batch.records.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(batch.last_seq(), batch.records.last().map(|r| r.seq).unwrap_or(0));

    let resigned = batch.sign(&key);
    assert_eq!(ReportBatch::verify(&resigned, &public, &limits).ok().as_ref(), Some(&batch));
    let other = fixed_key(DEVICE_KEY ^ 1).public();
    assert!(ReportBatch::verify(data, &other, &limits).is_err(), "verified under another key");

    let mut flipped = data.to_vec();
    let at = pick(data, flipped.len());
    flipped[at] ^= 0x80;
    assert_flip_harmless(data, &flipped, ReportBatch::verify(&flipped, &public, &limits).is_ok());
});
