//! The mirror layout, shared by HTTP mirrors, mirror directories and USB sticks:
//!
//! ```text
//! trust/root.<n>                    trust root history (envelopes)
//! channels/<channel>/index          signed channel index (small, polled)
//! releases/<sha256>.manifest        manifest envelopes, content-addressed
//! payloads/<sha256>.ferry           payload files, content-addressed, immutable
//! ```
//!
//! Paths are relative and use `/`; callers join them onto a directory or a base URL.

use crate::digest::Sha256Digest;
use crate::names::ChannelName;

/// `trust/root.<version>`.
pub fn root_path(version: u64) -> String {
    format!("trust/root.{version}")
}

/// `channels/<channel>/index`.
pub fn index_path(channel: &ChannelName) -> String {
    format!("channels/{channel}/index")
}

/// `releases/<sha256>.manifest`.
pub fn manifest_path(digest: &Sha256Digest) -> String {
    format!("releases/{}.manifest", digest.to_hex())
}

/// `payloads/<sha256>.ferry`.
pub fn payload_path(digest: &Sha256Digest) -> String {
    format!("payloads/{}.ferry", digest.to_hex())
}
