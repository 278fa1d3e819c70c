//! `.ferry` files through the device's whole intake path: `ContainerHeader::read_from`,
//! `verify` against a root provisioned from the first part of the input, then the payload
//! through `VerifyingReader` and `open_bundle` (seeds: real bundler payload files).
//!
//! Properties: the header never allocates more than the manifest limit; a header that
//! reads re-writes to exactly the bytes it consumed; a payload only passes `finish` when it
//! has exactly the signed size and digest; a bundle that opens has the refs and
//! prerequisites the signed entry names; decompression stays under its cap.
#![no_main]

use std::io::Read;

use ferry_fuzz::{assert_alloc_bound, fuzz_limits, peak_during, split};
use ferry_proto::container::ContainerHeader;
use ferry_proto::digest::VerifyingReader;
use ferry_proto::payload::{drain, open_bundle};
use ferry_proto::{Sha256Digest, VerifiedRoot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let (root, file) = split(data).unwrap_or((&[], data));
    let mut rest = file;
    let (header, peak) = peak_during(|| ContainerHeader::read_from(&mut rest, &limits));
    assert_alloc_bound(".ferry header", peak, 0, limits.max_envelope);
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    let consumed = file.len() - rest.len();
    assert_eq!(header.encoded_len(), consumed as u64);
    assert!(header.manifest.len() <= limits.max_envelope);
    let mut written = Vec::new();
    header.write_to(&mut written).expect("write to a Vec");
    assert_eq!(written, &file[..consumed], "header re-writes differently");

    let Ok(root) = VerifiedRoot::provisioned(root, &limits) else { return };
    let (manifest, entry) = match header.verify(&root, &limits) {
        Ok(v) => v,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    assert_eq!(entry.sha256, header.payload_sha256);
    assert_eq!(entry.size, header.payload_size);

    // Reading through the verifying reader must see exactly the signed bytes.
    let mut reader = VerifyingReader::new(rest, entry.size, entry.sha256);
    let mut seen = Vec::new();
    reader.read_to_end(&mut seen).expect("reading a slice");
    assert!(seen.len() as u64 <= entry.size);
    match reader.finish() {
        Ok(_) => {
            assert_eq!(rest.len() as u64, entry.size);
            assert_eq!(Sha256Digest::of(rest), entry.sha256);
        }
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            assert!(rest.len() as u64 != entry.size || Sha256Digest::of(rest) != entry.sha256);
        }
    }

    let reader = VerifyingReader::new(rest, entry.size, entry.sha256);
    let Ok((bundle, mut stream)) = open_bundle(Box::new(reader), entry.size, &limits) else { return };
    if manifest.check_bundle(&entry, &bundle).is_ok() {
        assert_eq!(bundle.refs.len(), 1);
        assert_eq!(bundle.refs[0].0, manifest.snapshot_commit);
        assert_eq!(bundle.object_format, manifest.object_format);
    }
    let _ = drain(&mut stream);
    assert!(stream.get_ref().bytes_read() <= limits.decompressed_cap(entry.size));
});
