//! Pieces shared by the fuzz targets and the seed generator (`seedgen`), which include
//! this file by path: deterministic keys, the input framing for two-part targets, and the
//! limits the targets decode under.

use ferry_proto::{Limits, SigningKey};

/// PKCS#8 v1 DER prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A fixed signing key, the same in every run: seed `[n; 32]`. Targets that must verify
/// a signature (report batches, generated documents) use these, and so do the seeds.
pub fn fixed_key(n: u8) -> SigningKey {
    use base64::Engine as _;
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&[n; 32]);
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
    match SigningKey::from_pem(&pem) {
        Ok(key) => key,
        Err(e) => panic!("fixed key {n} does not load: {e}"),
    }
}

/// The key every report batch target and seed is signed with.
pub const DEVICE_KEY: u8 = 0xd7;

/// Frames two inputs as one: a big-endian u16 length, the first part, then the second.
pub fn join(first: &[u8], second: &[u8]) -> Vec<u8> {
    let len = u16::try_from(first.len()).unwrap_or(u16::MAX);
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&first[..usize::from(len)]);
    out.extend_from_slice(second);
    out
}

/// Undoes [`join`]; `None` when the length points past the end.
pub fn split(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// Limits tightened well below the defaults, so the fuzzer reaches every limit with small
/// inputs and the allocation bounds the targets assert are tight.
pub fn fuzz_limits() -> Limits {
    Limits {
        max_envelope: 6 << 10,
        max_signatures: 8,
        max_roots_walked: 4,
        max_bundle_header: 2 << 10,
        max_bundle_lines: 16,
        max_decompression_ratio: 16,
        max_decompressed: 1 << 20,
        min_decompressed_allowance: 64 << 10,
    }
}
