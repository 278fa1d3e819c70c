//! `Envelope::decode` on arbitrary bytes, then every document decoder on the payload.
//!
//! Properties: limits hold (size, signature count, allocation); what decodes re-encodes to
//! bytes that decode back to the same value and re-encode to themselves (postcard may accept
//! more than one wire form, e.g. unsorted label maps, but its output is a fixed point); the
//! same holds for any document the payload decodes as.
#![no_main]

use ferry_fuzz::{assert_alloc_bound, fuzz_limits, peak_during};
use ferry_proto::envelope::{decode_document, encode_document, ENVELOPE_FORMAT};
use ferry_proto::report::ReportBatch;
use ferry_proto::{ChannelIndex, Envelope, ReleaseManifest, TrustRoot};
use libfuzzer_sys::fuzz_target;

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    what: &'static str,
    payload: &[u8],
) {
    let (doc, peak) = peak_during(|| decode_document::<T>(what, payload));
    assert_alloc_bound(what, peak, payload.len(), 0);
    if let Ok(doc) = doc {
        let bytes = encode_document(&doc);
        let again = decode_document::<T>(what, &bytes);
        assert_eq!(again.as_ref().ok(), Some(&doc), "{what} round trip");
        assert_eq!(again.map(|d| encode_document(&d)).ok(), Some(bytes), "{what} encoding is not a fixed point");
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let (env, peak) = peak_during(|| Envelope::decode(data, &limits));
    assert_alloc_bound("envelope", peak, data.len(), 0);
    let env = match env {
        Ok(env) => env,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    assert!(data.len() <= limits.max_envelope);
    assert!(env.signatures.len() <= limits.max_signatures);
    assert_eq!(env.format, ENVELOPE_FORMAT);
    let bytes = env.encode();
    assert!(bytes.len() <= data.len(), "re-encoding grew the envelope");
    let again = Envelope::decode(&bytes, &limits).expect("re-encoded envelope decodes");
    assert_eq!(again, env, "envelope round trip");
    assert_eq!(again.encode(), bytes, "envelope encoding is not a fixed point");

    round_trip::<TrustRoot>("trust root", &env.payload);
    round_trip::<ReleaseManifest>("release manifest", &env.payload);
    round_trip::<ChannelIndex>("channel index", &env.payload);
    round_trip::<ReportBatch>("report batch", &env.payload);
});
