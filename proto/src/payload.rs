//! Payload decoding: a zstd-compressed git bundle, decompressed as a stream under a cap.
//!
//! The cap ([`Limits::decompressed_cap`]) stops zstd bombs; the window limit stops a frame
//! from demanding more than the 128 MiB window `bundler` writes with (`--long=27`).

use std::io::{self, BufRead, BufReader, Read};

use crate::bundle_header::{read_bundle_header, BundleHeader, BundleHeaderError};
use crate::digest::CappedReader;
use crate::limits::Limits;

/// The largest zstd window a payload may use (log2 bytes).
pub const MAX_WINDOW_LOG: u32 = 27;

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
