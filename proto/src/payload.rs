//! Payload decoding: a zstd-compressed git bundle, decompressed as a stream under a cap.
//!
//! The cap ([`Limits::decompressed_cap`]) stops zstd bombs; the window limit stops a frame
//! from demanding more than the 8 MiB window `bundler` writes with, so the decoder's memory
//! does not grow with the payload.

use std::io::{self, BufRead, BufReader, Read};

use crate::bundle_header::{read_bundle_header, BundleHeader, BundleHeaderError};
use crate::digest::CappedReader;
use crate::limits::Limits;

/// The largest zstd window a payload may use (log2 bytes).
pub const MAX_WINDOW_LOG: u32 = 23;

/// The decompressed bundle stream, positioned after its header.
pub type BundleStream<'a> = BufReader<CappedReader<zstd::stream::read::Decoder<'a, BufReader<Box<dyn Read + 'a>>>>>;

/// Starts decompressing `payload` (of `payload_size` signed bytes) and parses the bundle
/// header, returning the header and the stream positioned at the first pack byte.
pub fn open_bundle<'a>(
    payload: Box<dyn Read + 'a>,
    payload_size: u64,
    limits: &Limits,
) -> Result<(BundleHeader, BundleStream<'a>), BundleHeaderError> {
    let mut decoder = zstd::stream::read::Decoder::new(payload)?;
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    let capped = CappedReader::new(decoder, limits.decompressed_cap(payload_size));
    let mut stream = BufReader::with_capacity(64 << 10, capped);
    let header = read_bundle_header(&mut stream, limits)?;
    Ok((header, stream))
}

/// Reads the rest of a stream to its end, returning how many bytes it held. Used to
/// check that a pack is followed by nothing.
pub fn drain(stream: &mut dyn BufRead) -> io::Result<u64> {
    io::copy(stream, &mut io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame that asks for a window over [`MAX_WINDOW_LOG`] is refused before the decoder
    /// allocates it: a device's memory does not grow with what a payload asks for.
    #[test]
    fn a_window_over_the_limit_is_refused() {
        // 12 MiB of non-repeating bytes, compressed with a 16 MiB window and no size hint,
        // so the frame header declares the large window.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..12 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect();
        let compress = |log: u32| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
            enc.window_log(log).expect("window");
            enc.long_distance_matching(true).expect("ldm");
            std::io::Write::write_all(&mut enc, &data).expect("write");
            enc.finish().expect("finish")
        };
        let big = compress(MAX_WINDOW_LOG + 1);
        let e = open_bundle(Box::new(std::io::Cursor::new(big.clone())), big.len() as u64, &Limits::default())
            .map(|_| ())
            .expect_err("a 16 MiB window is refused");
        assert!(e.to_string().contains("too much memory"), "{e}");
        // Within the limit, the same bytes get past the window check (and then fail as
        // what they are: not a git bundle).
        let ok = compress(MAX_WINDOW_LOG);
        let e = open_bundle(Box::new(std::io::Cursor::new(ok.clone())), ok.len() as u64, &Limits::default())
            .map(|_| ())
            .expect_err("not a bundle");
        assert!(!e.to_string().contains("too much memory"), "{e}");
    }
}
