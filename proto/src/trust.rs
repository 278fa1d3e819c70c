//! The trust root: versioned, lists keys and each role's key ids and threshold, and the
//! rotation rule that lets a device walk forward from the root it was provisioned with.
//!
//! Rotation (TUF §5.3): root N+1 must be signed by a threshold of root N's `root` keys *and*
//! by a threshold of its own `root` keys, and carry version exactly N+1. Roots do not expire:
//! a device offline for a year must still be able to walk forward.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::envelope::{decode_document, encode_document, DocKind, Envelope, EnvelopeError, Role};
use crate::index::ChannelIndex;
use crate::keys::{KeyId, PublicKey};
use crate::limits::Limits;
use crate::manifest::ReleaseManifest;
use crate::verified::Verified;
use crate::Reason;

/// Trust root document format version.
pub const ROOT_FORMAT: u32 = 1;

/// A trust root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRoot {
    /// [`ROOT_FORMAT`].
    pub format: u32,
    /// 1 for the first root; each rotation adds exactly one.
    pub version: u64,
    /// Unix seconds when the operator made it.
    pub created: u64,
    /// Every key any role uses.
    pub keys: Vec<PublicKey>,
    /// Signs trust roots.
    pub root: Role,
    /// Signs release manifests.
    pub release: Role,
    /// Signs channel indexes.
    pub index: Role,
}

/// Why a trust root was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The envelope or its signatures.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Not the next version.
    #[error("trust root version {found} does not follow version {current} (expected {})", current + 1)]
    NotNext { current: u64, found: u64 },
    /// A role names a key the root does not list, or has an impossible threshold.
    #[error("trust root is inconsistent: {0}")]
    Inconsistent(String),
    /// The walk hit its cap.
    #[error("more than {cap} trust roots to walk in one update")]
    TooManyRoots { cap: u64 },
    /// The source of roots failed.
    #[error("fetching trust root {version}: {detail}")]
    Fetch { version: u64, detail: String },
}

impl TrustError {
    /// The typed reason.
    pub fn reason(&self) -> Reason {
        match self {
            TrustError::Envelope(e) => e.reason(),
            TrustError::NotNext { .. } | TrustError::Inconsistent(_) | TrustError::TooManyRoots { .. } => {
                Reason::TrustRoot
            }
            TrustError::Fetch { .. } => Reason::Io,
        }
    }
}

impl TrustRoot {
    /// Encodes the document (the envelope payload).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_document(self)
    }

    /// Keys by id.
    pub fn key_map(&self) -> BTreeMap<KeyId, PublicKey> {
        self.keys.iter().map(|k| (k.id(), *k)).collect()
    }

    /// Checks internal consistency: every role key listed, thresholds in `1..=keys`.
    pub fn check(&self) -> Result<(), TrustError> {
        if self.format != ROOT_FORMAT {
            return Err(EnvelopeError::Unsupported { what: "trust root", version: self.format }.into());
        }
        if self.version == 0 {
            return Err(TrustError::Inconsistent("version must start at 1".into()));
        }
        let map = self.key_map();
        for (name, role) in [("root", &self.root), ("release", &self.release), ("index", &self.index)] {
            if role.threshold == 0 || role.threshold as usize > role.keys.len() {
                return Err(TrustError::Inconsistent(format!(
                    "role {name} has threshold {} with {} key(s)",
                    role.threshold,
                    role.keys.len()
                )));
            }
            if let Some(missing) = role.keys.iter().find(|k| !map.contains_key(k)) {
                return Err(TrustError::Inconsistent(format!("role {name} names unknown key {missing}")));
            }
            let mut ids = role.keys.clone();
            ids.sort();
            ids.dedup();
            if ids.len() != role.keys.len() {
                return Err(TrustError::Inconsistent(format!("role {name} lists a key twice")));
            }
        }
        Ok(())
    }
}

/// A trust root the device may rely on. Obtained only from [`VerifiedRoot::provisioned`]
/// or by rotating forward from another verified root.
#[derive(Debug, Clone)]
pub struct VerifiedRoot(Verified<TrustRoot>);

impl VerifiedRoot {
    /// The root a device was provisioned with: trusted by installation, but it must still
    /// decode and carry a threshold of its own root keys.
    pub fn provisioned(bytes: &[u8], limits: &Limits) -> Result<VerifiedRoot, TrustError> {
        let env = Envelope::decode(bytes, limits)?;
        let root: TrustRoot = decode_document("trust root", &env.payload)?;
        root.check()?;
        env.verify_role(DocKind::Root, "root", &root.root, &root.key_map())?;
        Ok(VerifiedRoot(Verified::new(root, bytes.to_vec())))
    }

    /// Verifies root N+1 against this root N.
    pub fn rotate(&self, next: &[u8], limits: &Limits) -> Result<VerifiedRoot, TrustError> {
        let env = Envelope::decode(next, limits)?;
        // Step 1: signed by a threshold of the current root keys, over the bytes received.
        env.verify_role(DocKind::Root, "root (current)", &self.0.root, &self.0.key_map())?;
        let root: TrustRoot = decode_document("trust root", &env.payload)?;
        root.check()?;
        // Step 2: signed by a threshold of its own root keys.
        env.verify_role(DocKind::Root, "root (new)", &root.root, &root.key_map())?;
        // Step 3: exactly the next version.
        if root.version != self.0.version + 1 {
            return Err(TrustError::NotNext { current: self.0.version, found: root.version });
        }
        Ok(VerifiedRoot(Verified::new(root, next.to_vec())))
    }

    /// Walks forward through `fetch(n)` for n = version+1, version+2, … until it returns
    /// `None`, verifying each rotation, at most `limits.max_roots_walked` steps.
    pub fn walk<E: std::fmt::Display>(
        self,
        mut fetch: impl FnMut(u64) -> Result<Option<Vec<u8>>, E>,
        limits: &Limits,
    ) -> Result<VerifiedRoot, TrustError> {
        let mut current = self;
        for _ in 0..limits.max_roots_walked {
            let version = current.version() + 1;
            match fetch(version).map_err(|e| TrustError::Fetch { version, detail: e.to_string() })? {
                None => return Ok(current),
                Some(bytes) => current = current.rotate(&bytes, limits)?,
            }
        }
        let version = current.version() + 1;
        match fetch(version).map_err(|e| TrustError::Fetch { version, detail: e.to_string() })? {
            None => Ok(current),
            Some(_) => Err(TrustError::TooManyRoots { cap: limits.max_roots_walked }),
        }
    }

    /// The root document.
    pub fn root(&self) -> &TrustRoot {
        &self.0
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.0.version
    }

    /// The envelope bytes as verified (to persist).
    pub fn envelope_bytes(&self) -> &[u8] {
        self.0.envelope_bytes()
    }

    /// Verifies a release manifest's signatures and decodes it. Policy (channel, release
    /// number, expiry) is checked separately by [`ReleaseManifest::check_policy`].
    pub fn verify_manifest(&self, bytes: &[u8], limits: &Limits) -> Result<Verified<ReleaseManifest>, EnvelopeError> {
        let env = Envelope::decode(bytes, limits)?;
        env.verify_role(DocKind::Manifest, "release", &self.0.release, &self.0.key_map())?;
        let manifest: ReleaseManifest = decode_document("release manifest", &env.payload)?;
        manifest.check_format()?;
        Ok(Verified::new(manifest, bytes.to_vec()))
    }

    /// Verifies a channel index's signatures and decodes it.
    pub fn verify_index(&self, bytes: &[u8], limits: &Limits) -> Result<Verified<ChannelIndex>, EnvelopeError> {
        let env = Envelope::decode(bytes, limits)?;
        env.verify_role(DocKind::Index, "index", &self.0.index, &self.0.key_map())?;
        let index: ChannelIndex = decode_document("channel index", &env.payload)?;
        index.check_format()?;
        Ok(Verified::new(index, bytes.to_vec()))
    }
}
