//! SHA-256 digests: what manifests, indexes and mirror file names use to name content.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sha256Digest(#[serde(with = "crate::bytes")] pub [u8; 32]);

impl Sha256Digest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// Lower-case hex, as used in mirror file names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// A string that is not 64 lower-case hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a SHA-256 digest (64 lower-case hex digits): {0:?}")]
pub struct BadDigest(pub String);

impl FromStr for Sha256Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, BadDigest> {
        let mut out = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(BadDigest(s.chars().take(80).collect()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| BadDigest(s.chars().take(80).collect()))?;
        Ok(Sha256Digest(out))
    }
}

/// Incremental SHA-256 with a byte count.
#[derive(Default, Clone)]
pub struct DigestWriter {
    hasher: Sha256,
    len: u64,
}

impl DigestWriter {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Sha256Digest {
        Sha256Digest(self.hasher.finalize().into())
    }
}

impl io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a stream did not match its signed size and digest.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// More bytes than signed.
    #[error("payload is larger than its signed size of {expected} bytes")]
    TooLong { expected: u64 },
    /// Fewer bytes than signed.
    #[error("payload is truncated: {got} of {expected} signed bytes")]
    Truncated { got: u64, expected: u64 },
    /// Right size, wrong content.
    #[error("payload digest {got} differs from the signed {expected}")]
    Mismatch { got: Sha256Digest, expected: Sha256Digest },
    /// Reading failed.
    #[error("reading payload: {0}")]
    Io(#[from] io::Error),
}

impl StreamError {
    /// The typed reason for this failure.
    pub fn reason(&self) -> crate::Reason {
        match self {
            StreamError::TooLong { .. } => crate::Reason::SizeExceeded,
            StreamError::Truncated { .. } | StreamError::Mismatch { .. } => crate::Reason::DigestMismatch,
            StreamError::Io(_) => crate::Reason::Io,
        }
    }
}

/// Reads exactly the signed number of bytes from `inner`, hashing them, and refuses
/// more. Call [`VerifyingReader::finish`] after reading to EOF to check the digest.
pub struct VerifyingReader<R> {
    inner: R,
    expected_size: u64,
    expected_digest: Sha256Digest,
    seen: DigestWriter,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, which must yield exactly `size` bytes hashing to `digest`.
    pub fn new(inner: R, size: u64, digest: Sha256Digest) -> Self {
        VerifyingReader { inner, expected_size: size, expected_digest: digest, seen: DigestWriter::default() }
    }

    /// Checks size, that the source is exhausted, and the digest.
    pub fn finish(mut self) -> Result<R, StreamError> {
        let mut probe = [0u8; 1];
        if self.seen.len() == self.expected_size && self.inner.read(&mut probe)? != 0 {
            return Err(StreamError::TooLong { expected: self.expected_size });
        }
        if self.seen.len() < self.expected_size {
            return Err(StreamError::Truncated { got: self.seen.len(), expected: self.expected_size });
        }
        let got = self.seen.finish();
        if got != self.expected_digest {
            return Err(StreamError::Mismatch { got, expected: self.expected_digest });
        }
        Ok(self.inner)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.expected_size - self.seen.len();
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.seen.update(&buf[..n]);
        Ok(n)
    }
}

/// A reader that fails once more than `cap` bytes came through: the guard against
/// decompression bombs.
pub struct CappedReader<R> {
    inner: R,
    cap: u64,
    seen: u64,
}

impl<R: Read> CappedReader<R> {
    /// Wraps `inner`, allowing at most `cap` bytes.
    pub fn new(inner: R, cap: u64) -> Self {
        CappedReader { inner, cap, seen: 0 }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.seen
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.cap {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("decompressed data exceeds the {}-byte limit", self.cap),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_reader_checks_size_and_digest() {
        let data = b"hello ferry".to_vec();
        let d = Sha256Digest::of(&data);
        let mut r = VerifyingReader::new(&data[..], data.len() as u64, d);
        io::copy(&mut r, &mut io::sink()).expect("read");
        r.finish().expect("matches");

        let mut longer = data.clone();
        longer.push(b'!');
        let mut r = VerifyingReader::new(&longer[..], data.len() as u64, d);
        io::copy(&mut r, &mut io::sink()).expect("read");
        assert!(matches!(r.finish(), Err(StreamError::TooLong { .. })));

        let mut r = VerifyingReader::new(&data[..5], data.len() as u64, d);
        io::copy(&mut r, &mut io::sink()).expect("read");
        assert!(matches!(r.finish(), Err(StreamError::Truncated { .. })));

        let mut flipped = data.clone();
        flipped[0] ^= 1;
        let mut r = VerifyingReader::new(&flipped[..], data.len() as u64, d);
        io::copy(&mut r, &mut io::sink()).expect("read");
        assert!(matches!(r.finish(), Err(StreamError::Mismatch { .. })));
    }

    #[test]
    fn digest_parses_only_canonical_hex() {
        let d = Sha256Digest::of(b"x");
        assert_eq!(d.to_hex().parse::<Sha256Digest>().expect("parse"), d);
        assert!(d.to_hex().to_uppercase().parse::<Sha256Digest>().is_err());
        assert!("abc".parse::<Sha256Digest>().is_err());
    }
}
