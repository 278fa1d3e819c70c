//! Every size and count limit of the wire contract, in one place.
//!
//! Decoders take a [`Limits`] and check it before allocating. Defaults are DESIGN's;
//! devices may tighten them in their config.

/// Limits enforced while decoding and verifying untrusted documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest signed envelope (trust root, manifest, index), in bytes.
    pub max_envelope: usize,
    /// Most signatures one envelope may carry.
    pub max_signatures: usize,
    /// Most trust roots walked in one update.
    pub max_roots_walked: u64,
    /// Largest git bundle header, in bytes.
    pub max_bundle_header: usize,
    /// Most ref and prerequisite lines in a bundle header.
    pub max_bundle_lines: usize,
    /// Decompressed bundle may be at most this many times the payload size.
    pub max_decompression_ratio: u64,
    /// Decompressed bundle may never exceed this many bytes.
    pub max_decompressed: u64,
    /// A small payload may always expand to this many bytes, whatever the ratio
    /// (tiny, repetitive trees compress far better than 16:1).
    pub min_decompressed_allowance: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope: 1 << 20,
            max_signatures: 64,
            max_roots_walked: 64,
            max_bundle_header: 64 << 10,
            max_bundle_lines: 1024,
            max_decompression_ratio: 16,
            max_decompressed: 8 << 30,
            min_decompressed_allowance: 64 << 20,
        }
    }
}

impl Limits {
    /// The most bytes a payload of `payload_size` compressed bytes may expand to.
    pub fn decompressed_cap(&self, payload_size: u64) -> u64 {
        payload_size
            .saturating_mul(self.max_decompression_ratio)
            .max(self.min_decompressed_allowance)
            .min(self.max_decompressed)
    }
}
