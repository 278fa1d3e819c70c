//! The release manifest, signed by the `release` role: which snapshot a release is, where
//! it came from, who it is for, and the payloads (full and deltas) that carry it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::digest::Sha256Digest;
use crate::envelope::{encode_document, EnvelopeError};
use crate::names::{ChannelName, GitOid, ObjectFormat};
use crate::Reason;

/// Manifest document format version.
pub const MANIFEST_FORMAT: u32 = 1;

/// Where the release's tree came from (informational; the snapshot is what counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The operator's repository (a path or URL, as given to `bundler release`).
    pub repo: String,
    /// The ref that was released.
    pub reference: String,
    /// The commit the ref pointed at.
    pub commit: GitOid,
    /// Sub-directory of the commit's tree that was released (`None`: the whole tree).
    pub path: Option<String>,
}

/// How a payload carries the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// A bundle holding the whole snapshot.
    Full,
    /// A thin bundle that needs release `from_release`'s snapshot `base_commit`.
    Delta {
        /// The base release number.
        from_release: u64,
        /// The base release's snapshot commit (the bundle's prerequisite).
        base_commit: GitOid,
    },
}

/// One payload file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRef {
    /// Full or delta.
    pub kind: PayloadKind,
    /// Exact size in bytes of the compressed bundle.
    pub size: u64,
    /// SHA-256 of the compressed bundle; the `.ferry` file is `payloads/<sha256>.ferry`.
    pub sha256: Sha256Digest,
}

impl PayloadRef {
    /// The content-addressed file name of the `.ferry` file carrying it.
    pub fn file_name(&self) -> String {
        format!("{}.ferry", self.sha256.to_hex())
    }
}

/// A release manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The channel it belongs to.
    pub channel: ChannelName,
    /// Strictly increasing per channel, starting at 1.
    pub release: u64,
    /// Provenance.
    pub source: Source,
    /// The deterministic orphan snapshot commit.
    pub snapshot_commit: GitOid,
    /// Its tree.
    pub snapshot_tree: GitOid,
    /// The object format of both.
    pub object_format: ObjectFormat,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which no device may apply it.
    pub not_after: Option<u64>,
    /// Device labels a device must all carry to take the release.
    pub require_labels: BTreeMap<String, String>,
    /// Full payload first, then deltas.
    pub payloads: Vec<PayloadRef>,
}

/// Why a verified manifest does not apply to this device now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Another channel's release.
    #[error("release belongs to channel {found:?}, this device follows {expected:?}")]
    WrongChannel { expected: String, found: String },
    /// Not newer than what is applied.
    #[error("release {found} is not newer than release {current}")]
    NotNewer { current: u64, found: u64 },
    /// Past its not-after.
    #[error("release {release} expired at {not_after} (now {now})")]
    Expired { release: u64, not_after: u64, now: u64 },
    /// The device lacks a required label.
    #[error("release {release} requires label {key}={value}, which this device does not have")]
    NotTargeted { release: u64, key: String, value: String },
}

impl PolicyError {
    /// The typed reason.
    pub fn reason(&self) -> Reason {
        match self {
            PolicyError::WrongChannel { .. } => Reason::WrongChannel,
            PolicyError::NotNewer { .. } => Reason::Rollback,
            PolicyError::Expired { .. } => Reason::Expired,
            PolicyError::NotTargeted { .. } => Reason::NotTargeted,
        }
    }
}

impl ReleaseManifest {
    /// Encodes the document (the envelope payload).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_document(self)
    }

    pub(crate) fn check_format(&self) -> Result<(), EnvelopeError> {
        if self.format != MANIFEST_FORMAT {
            return Err(EnvelopeError::Unsupported { what: "release manifest", version: self.format });
        }
        let ids = [&self.snapshot_commit, &self.snapshot_tree];
        let bases = self.payloads.iter().filter_map(|p| match &p.kind {
            PayloadKind::Delta { base_commit, .. } => Some(base_commit),
            PayloadKind::Full => None,
        });
        if ids.into_iter().chain(bases).any(|id| id.format() != self.object_format) {
            return Err(EnvelopeError::Malformed {
                what: "release manifest",
                detail: format!("object ids do not match object format {}", self.object_format),
            });
        }
        if self.release == 0 || self.payloads.is_empty() {
            return Err(EnvelopeError::Malformed {
                what: "release manifest",
                detail: "release number 0 or no payloads".into(),
            });
        }
        Ok(())
    }

    /// Checks that this release is for `channel`, newer than `applied`, not expired at
    /// `now`, and selects a device carrying `labels`.
    pub fn check_policy(
        &self,
        channel: &ChannelName,
        applied: Option<u64>,
        now: u64,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), PolicyError> {
        if &self.channel != channel {
            return Err(PolicyError::WrongChannel { expected: channel.to_string(), found: self.channel.to_string() });
        }
        if let Some(current) = applied {
            if self.release <= current {
                return Err(PolicyError::NotNewer { current, found: self.release });
            }
        }
        if let Some(not_after) = self.not_after {
            if now > not_after {
                return Err(PolicyError::Expired { release: self.release, not_after, now });
            }
        }
        for (key, value) in &self.require_labels {
            if labels.get(key) != Some(value) {
                return Err(PolicyError::NotTargeted { release: self.release, key: key.clone(), value: value.clone() });
            }
        }
        Ok(())
    }

    /// The full payload.
    pub fn full_payload(&self) -> Option<&PayloadRef> {
        self.payloads.iter().find(|p| p.kind == PayloadKind::Full)
    }

    /// The payload with this digest.
    pub fn payload(&self, digest: &Sha256Digest) -> Option<&PayloadRef> {
        self.payloads.iter().find(|p| &p.sha256 == digest)
    }
}

/// A payload's bundle header that does not match its signed manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bundle does not match release {release}: {detail}")]
pub struct BundleMismatch {
    /// The release.
    pub release: u64,
    /// What differs.
    pub detail: String,
}

impl ReleaseManifest {
    /// The ref name a release's snapshot carries: `refs/ferry/<channel>/<release>`.
    pub fn snapshot_ref(&self) -> String {
        format!("refs/ferry/{}/{}", self.channel, self.release)
    }

    /// Checks that a payload's bundle header is the one the manifest signed for: same
    /// object format, one ref carrying the snapshot commit, and exactly the expected
    /// prerequisite (none for a full payload, the base commit for a delta).
    pub fn check_bundle(
        &self,
        payload: &PayloadRef,
        header: &crate::bundle_header::BundleHeader,
    ) -> Result<(), BundleMismatch> {
        let fail = |detail: String| Err(BundleMismatch { release: self.release, detail });
        if header.object_format != self.object_format {
            return fail(format!("object format {} instead of {}", header.object_format, self.object_format));
        }
        if header.refs.len() != 1 || header.refs[0].0 != self.snapshot_commit {
            return fail(format!("refs {:?} instead of the snapshot {}", header.refs, self.snapshot_commit));
        }
        let expected: Vec<&GitOid> = match &payload.kind {
            PayloadKind::Full => vec![],
            PayloadKind::Delta { base_commit, .. } => vec![base_commit],
        };
        if header.prerequisites.iter().collect::<Vec<_>>() != expected {
            return fail(format!("prerequisites {:?} instead of {:?}", header.prerequisites, expected));
        }
        Ok(())
    }
}
