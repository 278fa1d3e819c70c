//! The channel index, signed by the `index` role (which may live online): short-lived,
//! polled often, naming the latest release and its manifest digest.
//!
//! The expiry defends against a mirror that freezes a device on old data; the strictly
//! increasing index version defends against a mirror replaying an older index.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::envelope::{encode_document, EnvelopeError};
use crate::names::ChannelName;
use crate::Reason;

/// Index document format version.
pub const INDEX_FORMAT: u32 = 1;

/// The release an index points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestRelease {
    /// Release number.
    pub release: u64,
    /// SHA-256 of the manifest envelope: `releases/<digest>.manifest`.
    pub manifest_sha256: Sha256Digest,
}

/// A channel index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelIndex {
    /// [`INDEX_FORMAT`].
    pub format: u32,
    /// The channel.
    pub channel: ChannelName,
    /// Strictly increasing with every signing.
    pub version: u64,
    /// Unix seconds when signed.
    pub created: u64,
    /// Unix seconds after which devices refuse it.
    pub expires: u64,
    /// The latest release, if any.
    pub latest: Option<LatestRelease>,
    /// Percentage (0–100) of devices that may take the latest release.
    pub rollout_percent: u8,
    /// When true, no device newly takes the latest release.
    pub halted: bool,
}

/// Why a verified index is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexPolicyError {
    /// Another channel's index.
    #[error("index is for channel {found:?}, this device follows {expected:?}")]
    WrongChannel { expected: String, found: String },
    /// Older than one already seen.
    #[error("index version {found} is older than version {seen} already seen")]
    Rollback { seen: u64, found: u64 },
    /// Past its expiry.
    #[error("index version {version} expired at {expires} (now {now})")]
    Expired { version: u64, expires: u64, now: u64 },
}

impl IndexPolicyError {
    /// The typed reason.
    pub fn reason(&self) -> Reason {
        match self {
            IndexPolicyError::WrongChannel { .. } => Reason::WrongChannel,
            IndexPolicyError::Rollback { .. } => Reason::Rollback,
            IndexPolicyError::Expired { .. } => Reason::Expired,
        }
    }
}

impl ChannelIndex {
    /// Encodes the document (the envelope payload).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_document(self)
    }

    pub(crate) fn check_format(&self) -> Result<(), EnvelopeError> {
        if self.format != INDEX_FORMAT {
            return Err(EnvelopeError::Unsupported { what: "channel index", version: self.format });
        }
        if self.rollout_percent > 100 {
            return Err(EnvelopeError::Malformed {
                what: "channel index",
                detail: format!("rollout {}% is over 100%", self.rollout_percent),
            });
        }
        Ok(())
    }

    /// Checks channel, that the version is not below `seen_version`, and expiry at `now`.
    pub fn check_policy(&self, channel: &ChannelName, seen_version: u64, now: u64) -> Result<(), IndexPolicyError> {
        if &self.channel != channel {
            return Err(IndexPolicyError::WrongChannel {
                expected: channel.to_string(),
                found: self.channel.to_string(),
            });
        }
        if self.version < seen_version {
            return Err(IndexPolicyError::Rollback { seen: seen_version, found: self.version });
        }
        if now > self.expires {
            return Err(IndexPolicyError::Expired { version: self.version, expires: self.expires, now });
        }
        Ok(())
    }
}
