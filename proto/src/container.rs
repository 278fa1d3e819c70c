//! The `.ferry` file: one self-contained, verifiable release payload.
//!
//! ```text
//! magic        8 bytes   89 'F' 'E' 'R' 'R' 'Y' 0d 0a
//! version      u16 BE    1
//! manifest     u32 BE length, then the signed manifest envelope
//! digest       32 bytes  SHA-256 of the payload (names the manifest's payload entry)
//! size         u64 BE    payload size
//! payload      the zstd-compressed git bundle, to end of file
//! ```
//!
//! The digest and size in the header only say which manifest entry the file carries;
//! the signed entry's size and digest are what the reader enforces
//! ([`crate::digest::VerifyingReader`]). The payload is streamed, never loaded whole.

use std::io::{self, Read, Write};

use crate::digest::Sha256Digest;
use crate::limits::Limits;
use crate::Reason;

/// First bytes of every `.ferry` file.
pub const MAGIC: [u8; 8] = *b"\x89FERRY\r\n";
/// Container format version.
pub const CONTAINER_FORMAT: u16 = 1;

/// The header of a `.ferry` file; the payload follows it in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerHeader {
    /// The manifest envelope bytes (unverified).
    pub manifest: Vec<u8>,
    /// Which payload entry the file claims to carry.
    pub payload_sha256: Sha256Digest,
    /// Its claimed size.
    pub payload_size: u64,
}

/// Why a `.ferry` header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Not a `.ferry` file.
    #[error("not a .ferry file (bad magic)")]
    BadMagic,
    /// An unknown container version.
    #[error(".ferry format version {0} is not supported")]
    Unsupported(u16),
    /// A manifest longer than allowed.
    #[error(".ferry manifest of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: u64, limit: usize },
    /// The file ends inside the header.
    #[error(".ferry header is truncated")]
    Truncated,
    /// The manifest inside does not verify.
    #[error("manifest in .ferry file: {0}")]
    Manifest(#[from] crate::envelope::EnvelopeError),
    /// The payload the header names is not one the manifest signed.
    #[error("payload {digest} is not listed in release {release}'s manifest")]
    NotListed { digest: Sha256Digest, release: u64 },
    /// The header's size differs from the signed size.
    #[error("payload size {claimed} differs from the signed size {signed}")]
    SizeMismatch { claimed: u64, signed: u64 },
    /// Reading failed.
    #[error("reading .ferry header: {0}")]
    Io(io::Error),
}

impl ContainerError {
    /// The typed reason.
    pub fn reason(&self) -> Reason {
        match self {
            ContainerError::BadMagic | ContainerError::Truncated => Reason::Malformed,
            ContainerError::Unsupported(_) => Reason::Unsupported,
            ContainerError::TooLarge { .. } => Reason::SizeExceeded,
            ContainerError::Manifest(e) => e.reason(),
            ContainerError::NotListed { .. } | ContainerError::SizeMismatch { .. } => Reason::DigestMismatch,
            ContainerError::Io(_) => Reason::Io,
        }
    }
}

impl From<io::Error> for ContainerError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ContainerError::Truncated
        } else {
            ContainerError::Io(e)
        }
    }
}

impl ContainerHeader {
    /// Writes the header; the caller then writes exactly `payload_size` payload bytes.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let len = u32::try_from(self.manifest.len()).map_err(|_| io::Error::other("manifest too large"))?;
        out.write_all(&MAGIC)?;
        out.write_all(&CONTAINER_FORMAT.to_be_bytes())?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&self.manifest)?;
        out.write_all(&self.payload_sha256.0)?;
        out.write_all(&self.payload_size.to_be_bytes())?;
        Ok(())
    }

    /// Reads a header, leaving `r` at the first payload byte. Limits are checked before
    /// allocating.
    pub fn read_from(r: &mut dyn Read, limits: &Limits) -> Result<ContainerHeader, ContainerError> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(ContainerError::BadMagic);
        }
        let mut v = [0u8; 2];
        r.read_exact(&mut v)?;
        let version = u16::from_be_bytes(v);
        if version != CONTAINER_FORMAT {
            return Err(ContainerError::Unsupported(version));
        }
        let mut l = [0u8; 4];
        r.read_exact(&mut l)?;
        let len = u32::from_be_bytes(l);
        if len as usize > limits.max_envelope {
            return Err(ContainerError::TooLarge { size: len.into(), limit: limits.max_envelope });
        }
        let mut manifest = vec![0u8; len as usize];
        r.read_exact(&mut manifest)?;
        let mut digest = [0u8; 32];
        r.read_exact(&mut digest)?;
        let mut size = [0u8; 8];
        r.read_exact(&mut size)?;
        Ok(ContainerHeader { manifest, payload_sha256: Sha256Digest(digest), payload_size: u64::from_be_bytes(size) })
    }

    /// Verifies the manifest against `root` and finds the signed payload entry this file
    /// carries. The payload itself must then be read through a
    /// [`crate::digest::VerifyingReader`] built from the returned entry.
    pub fn verify(
        &self,
        root: &crate::trust::VerifiedRoot,
        limits: &Limits,
    ) -> Result<(crate::Verified<crate::ReleaseManifest>, crate::manifest::PayloadRef), ContainerError> {
        let manifest = root.verify_manifest(&self.manifest, limits)?;
        let entry = manifest
            .payload(&self.payload_sha256)
            .cloned()
            .ok_or(ContainerError::NotListed { digest: self.payload_sha256, release: manifest.release })?;
        if entry.size != self.payload_size {
            return Err(ContainerError::SizeMismatch { claimed: self.payload_size, signed: entry.size });
        }
        Ok((manifest, entry))
    }

    /// Bytes the header occupies on disk.
    pub fn encoded_len(&self) -> u64 {
        (MAGIC.len() + 2 + 4 + self.manifest.len() + 32 + 8) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_truncation() {
        let h = ContainerHeader { manifest: vec![1, 2, 3], payload_sha256: Sha256Digest::of(b"p"), payload_size: 1 };
        let mut buf = Vec::new();
        h.write_to(&mut buf).expect("write");
        assert_eq!(buf.len() as u64, h.encoded_len());
        buf.push(b'p');
        let mut r = &buf[..];
        assert_eq!(ContainerHeader::read_from(&mut r, &Limits::default()).expect("read"), h);
        assert_eq!(r, b"p");
        for cut in 0..buf.len() - 1 {
            let mut r = &buf[..cut];
            assert!(ContainerHeader::read_from(&mut r, &Limits::default()).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn oversized_manifest_length_is_refused_before_allocating() {
        let mut buf = MAGIC.to_vec();
        buf.extend_from_slice(&1u16.to_be_bytes());
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = ContainerHeader::read_from(&mut &buf[..], &Limits::default()).expect_err("too large");
        assert_eq!(err.reason(), Reason::SizeExceeded);
    }
}
