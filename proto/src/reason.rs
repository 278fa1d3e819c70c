//! Typed rejection reasons: the short, stable codes a device shows, logs and reports.
//!
//! Every failure that refuses input maps to exactly one [`Reason`]. The kebab-case code is
//! part of the wire contract (reports carry it) and of the operator's vocabulary (the
//! troubleshooting guide is indexed by it), so codes are never renamed.

use serde::{Deserialize, Serialize};

/// Why something was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reason {
    /// A signature did not verify, or a document is not signed by a key of the role.
    Signature,
    /// Fewer distinct authorised keys signed than the role's threshold requires.
    Threshold,
    /// The document's expiry (or not-after) has passed.
    Expired,
    /// A release, index or root is not newer than what the device already trusts.
    Rollback,
    /// The document belongs to another channel.
    WrongChannel,
    /// A digest (payload, manifest) differs from the signed one.
    DigestMismatch,
    /// Something is larger than the signed size or a configured limit.
    SizeExceeded,
    /// Bytes that do not decode as the document they claim to be.
    Malformed,
    /// A format version or capability this device does not understand.
    Unsupported,
    /// A tree entry whose name or mode may not be checked out.
    UnsafePath,
    /// A symbolic link that is absolute or escapes the slot.
    UnsafeSymlink,
    /// A delta payload whose base commit the device does not hold.
    MissingPrerequisite,
    /// An object the release tree needs is absent or corrupt.
    MissingObject,
    /// The release's labels or rollout do not select this device.
    NotTargeted,
    /// The release was refused before (rolled back) and is not retried.
    Refused,
    /// The health check failed or timed out.
    HealthFailed,
    /// The activate hook failed or timed out.
    ActivateFailed,
    /// The trust root chain could not be walked (gap, cap, bad rotation).
    TrustRoot,
    /// A local I/O or storage failure (disk full, permissions).
    Io,
}

impl Reason {
    /// The stable kebab-case code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Signature => "signature",
            Reason::Threshold => "threshold",
            Reason::Expired => "expired",
            Reason::Rollback => "rollback",
            Reason::WrongChannel => "wrong-channel",
            Reason::DigestMismatch => "digest-mismatch",
            Reason::SizeExceeded => "size-exceeded",
            Reason::Malformed => "malformed",
            Reason::Unsupported => "unsupported",
            Reason::UnsafePath => "unsafe-path",
            Reason::UnsafeSymlink => "unsafe-symlink",
            Reason::MissingPrerequisite => "missing-prerequisite",
            Reason::MissingObject => "missing-object",
            Reason::NotTargeted => "not-targeted",
            Reason::Refused => "refused",
            Reason::HealthFailed => "health-failed",
            Reason::ActivateFailed => "activate-failed",
            Reason::TrustRoot => "trust-root",
            Reason::Io => "io",
        }
    }

    /// Parses a code written by [`Reason::code`].
    pub fn from_code(code: &str) -> Option<Reason> {
        ALL.iter().copied().find(|r| r.code() == code)
    }
}

const ALL: [Reason; 19] = [
    Reason::Signature,
    Reason::Threshold,
    Reason::Expired,
    Reason::Rollback,
    Reason::WrongChannel,
    Reason::DigestMismatch,
    Reason::SizeExceeded,
    Reason::Malformed,
    Reason::Unsupported,
    Reason::UnsafePath,
    Reason::UnsafeSymlink,
    Reason::MissingPrerequisite,
    Reason::MissingObject,
    Reason::NotTargeted,
    Reason::Refused,
    Reason::HealthFailed,
    Reason::ActivateFailed,
    Reason::TrustRoot,
    Reason::Io,
];

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
    }
}
