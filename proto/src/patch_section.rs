//! The patch section: binary patches that may follow the pack of a delta payload.
//!
//! A rebuilt binary shifts code and rewrites relative addresses all through it, which git's
//! copy/insert deltas see as new bytes; bsdiff encodes them as small differences
//! (docs/formats.md, "Patch section"). A delta payload's pack may therefore leave out large
//! changed blobs; each one then follows the pack's trailing checksum as a bsdiff patch
//! against the blob at the same path in the base release:
//!
//! ```text
//! "ferry patches 1\n"                      magic, 16 bytes
//! count                                    u32, big-endian
//! count × (
//!   target id, base id                     raw object ids of the format's length
//!   target size, patch length              u64, big-endian
//!   patch                                  bsdiff (crate `bsdiff` 0.2) control/diff/extra
//! )
//! ```
//!
//! Nothing may follow the last patch. This module reads and writes the framing only; the
//! agent applies each patch with its output checked against the target's size and id.

use std::io::{self, Read, Write};

use crate::Reason;

/// First bytes of a patch section.
pub const MAGIC: &[u8; 16] = b"ferry patches 1\n";

/// Most patches one section may carry.
pub const MAX_PATCHES: u32 = 1 << 16;

/// The longest patch accepted for a target of `target_size` bytes. A bsdiff patch holds
/// `target_size` bytes of diff and extra data plus 24 bytes per control triple (460 of them,
/// 0.18 %, between two builds of the agent); a bundler whose patch is longer ships the blob
/// in the pack instead. Applying a patch never produces more bytes than it reads, so this
/// also bounds the memory an applier needs.
pub fn max_patch_len(target_size: u64) -> u64 {
    target_size.saturating_add(target_size / 16).saturating_add(4096)
}

/// One patch's framing: which blob it makes, from which, and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchHeader {
    /// Raw id of the blob the patch produces.
    pub target: Vec<u8>,
    /// Raw id of the blob it applies to (in the base release).
    pub base: Vec<u8>,
    /// Size of the blob the patch produces.
    pub target_size: u64,
    /// Bytes of bsdiff patch that follow.
    pub patch_len: u64,
}

/// Why a patch section was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatchSectionError {
    /// Bytes that do not start with the section's magic.
    #[error("not a patch section: {0}")]
    NotASection(String),
    /// A patch section that breaks its format.
    #[error("bad patch section: {0}")]
    Malformed(String),
    /// More patches than [`MAX_PATCHES`].
    #[error("patch section exceeds {0}")]
    TooLarge(String),
    /// Reading failed.
    #[error("reading the patch section: {0}")]
    Io(io::Error),
}

impl PatchSectionError {
    /// The typed reason.
    pub fn reason(&self) -> Reason {
        match self {
            PatchSectionError::NotASection(_) | PatchSectionError::Malformed(_) => Reason::Malformed,
            PatchSectionError::TooLarge(_) => Reason::SizeExceeded,
            PatchSectionError::Io(_) => Reason::Io,
        }
    }
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), PatchSectionError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => PatchSectionError::Malformed(format!("ends inside {what} (truncated)")),
        _ => PatchSectionError::Io(e),
    })
}

fn read_u64(r: &mut dyn Read, what: &str) -> Result<u64, PatchSectionError> {
    let mut buf = [0; 8];
    read_exact(r, &mut buf, what)?;
    Ok(u64::from_be_bytes(buf))
}

/// Reads the magic and the patch count.
pub fn read_section_start(r: &mut dyn Read) -> Result<u32, PatchSectionError> {
    let mut magic = Vec::with_capacity(MAGIC.len());
    r.take(MAGIC.len() as u64).read_to_end(&mut magic).map_err(PatchSectionError::Io)?;
    if magic != MAGIC {
        return Err(PatchSectionError::NotASection(format!(
            "{:?} instead of {:?}",
            String::from_utf8_lossy(&magic),
            String::from_utf8_lossy(MAGIC)
        )));
    }
    let mut count = [0; 4];
    read_exact(r, &mut count, "its patch count")?;
    let count = u32::from_be_bytes(count);
    if count == 0 {
        return Err(PatchSectionError::Malformed("declares no patches".into()));
    }
    if count > MAX_PATCHES {
        return Err(PatchSectionError::TooLarge(format!("{MAX_PATCHES} patches (declares {count})")));
    }
    Ok(count)
}

/// Reads one patch's framing for object ids of `id_len` bytes, checking the patch length
/// against [`max_patch_len`]. The target size is the reader's to check against its own
/// object size limit.
pub fn read_patch_header(r: &mut dyn Read, id_len: usize) -> Result<PatchHeader, PatchSectionError> {
    let mut target = vec![0; id_len];
    read_exact(r, &mut target, "a target id")?;
    let mut base = vec![0; id_len];
    read_exact(r, &mut base, "a base id")?;
    let target_size = read_u64(r, "a target size")?;
    let patch_len = read_u64(r, "a patch length")?;
    if patch_len > max_patch_len(target_size) {
        return Err(PatchSectionError::Malformed(format!(
            "a patch of {patch_len} bytes for a {target_size}-byte blob exceeds the {} a patch may take",
            max_patch_len(target_size)
        )));
    }
    Ok(PatchHeader { target, base, target_size, patch_len })
}

/// Writes the magic and the patch count.
pub fn write_section_start(w: &mut dyn Write, count: u32) -> io::Result<()> {
    w.write_all(MAGIC)?;
    w.write_all(&count.to_be_bytes())
}

/// Writes one patch's framing; its `patch_len` bytes of patch follow.
pub fn write_patch_header(w: &mut dyn Write, header: &PatchHeader) -> io::Result<()> {
    w.write_all(&header.target)?;
    w.write_all(&header.base)?;
    w.write_all(&header.target_size.to_be_bytes())?;
    w.write_all(&header.patch_len.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(target_size: u64, patch_len: u64) -> PatchHeader {
        PatchHeader { target: vec![1; 20], base: vec![2; 20], target_size, patch_len }
    }

    #[test]
    fn framing_round_trips() {
        let mut bytes = Vec::new();
        write_section_start(&mut bytes, 2).expect("write");
        write_patch_header(&mut bytes, &header(100, 130)).expect("write");
        let mut r = bytes.as_slice();
        assert_eq!(read_section_start(&mut r).expect("start"), 2);
        assert_eq!(read_patch_header(&mut r, 20).expect("header"), header(100, 130));
        assert!(r.is_empty());
    }

    #[test]
    fn rejections_are_typed() {
        let start = |count: u32| {
            let mut bytes = Vec::new();
            write_section_start(&mut bytes, count).expect("write");
            bytes
        };
        let cases: Vec<(Vec<u8>, Reason)> = vec![
            (b"ferry patches 2\n\0\0\0\x01".to_vec(), Reason::Malformed),
            (start(1)[..10].to_vec(), Reason::Malformed),
            (start(1)[..18].to_vec(), Reason::Malformed),
            (start(0), Reason::Malformed),
            (start(MAX_PATCHES + 1), Reason::SizeExceeded),
        ];
        for (bytes, reason) in cases {
            let err = read_section_start(&mut bytes.as_slice()).expect_err("refused");
            assert_eq!(err.reason(), reason, "{err}");
        }
        let framed = |h: &PatchHeader| {
            let mut bytes = Vec::new();
            write_patch_header(&mut bytes, h).expect("write");
            bytes
        };
        let too_long = read_patch_header(&mut framed(&header(100, 4203)).as_slice(), 20).expect_err("len");
        assert_eq!(too_long.reason(), Reason::Malformed, "{too_long}");
        let cut = framed(&header(100, 100));
        let truncated = read_patch_header(&mut &cut[..cut.len() - 1], 20).expect_err("cut");
        assert_eq!(truncated.reason(), Reason::Malformed, "{truncated}");
    }

    proptest! {
        /// Whatever the bytes, reading a section start and a header returns or refuses,
        /// never panics, and what it accepts is within the caps.
        #[test]
        fn arbitrary_bytes_never_exceed_the_caps(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            for input in [bytes.as_slice(), with_magic.as_slice()] {
                let mut r = input;
                if let Ok(count) = read_section_start(&mut r) {
                    prop_assert!((1..=MAX_PATCHES).contains(&count));
                    if let Ok(h) = read_patch_header(&mut r, 20) {
                        prop_assert!(h.patch_len <= max_patch_len(h.target_size));
                    }
                }
            }
        }
    }
}
