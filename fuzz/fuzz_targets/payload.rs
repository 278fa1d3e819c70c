//! Payload opening: `open_bundle` (streaming zstd decompression under a cap, then the
//! bundle header) and `drain`.
//!
//! The first byte selects the mode: even means the rest is taken as the compressed payload
//! as is; odd means the rest is compressed here first, so the fuzzer also drives the header
//! parser through the decompressor. Properties: the decompressed byte count never exceeds
//! `Limits::decompressed_cap` of the payload size; in the second mode the header matches
//! what `read_bundle_header` makes of the uncompressed bytes (a differential check).
#![no_main]

use ferry_fuzz::fuzz_limits;
use ferry_proto::bundle_header::read_bundle_header;
use ferry_proto::payload::{drain, open_bundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let Some((mode, rest)) = data.split_first() else { return };
    let payload =
        if mode % 2 == 0 { rest.to_vec() } else { zstd::bulk::compress(rest, 1).expect("zstd compresses a slice") };
    let cap = limits.decompressed_cap(payload.len() as u64);
    let opened = open_bundle(Box::new(&payload[..]), payload.len() as u64, &limits);
    if mode % 2 == 1 {
        let direct = read_bundle_header(&mut &rest[..], &limits);
        match (&opened, &direct) {
            (Ok((a, _)), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason(), "{a} / {b}"),
            (a, b) => panic!("decompressed and direct parses disagree: {:?} / {:?}", a.as_ref().map(|x| &x.0), b),
        }
    }
    match opened {
        Ok((_, mut stream)) => {
            let drained = drain(&mut stream);
            let read = stream.get_ref().bytes_read();
            assert!(read <= cap, "decompressed {read} bytes over the cap of {cap}");
            if let Ok(n) = drained {
                assert!(n <= read);
            }
        }
        Err(e) => {
            let _ = (e.reason(), e.to_string());
        }
    }
});
