//! Signed envelopes: the exact payload bytes plus `(key id, signature)` pairs.
//!
//! A signature covers a domain-separation tag naming the document kind and format version,
//! then the payload bytes, so a signature over one kind of document never verifies as
//! another. Verification runs over the bytes received; decoding the payload comes after.
//! Each distinct authorised key counts once towards a threshold.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::keys::{KeyId, PublicKey, SigningKey};
use crate::limits::Limits;
use crate::Reason;

/// Envelope wire format version.
pub const ENVELOPE_FORMAT: u8 = 1;

/// The kinds of signed document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DocKind {
    /// A trust root.
    Root,
    /// A release manifest.
    Manifest,
    /// A channel index.
    Index,
    /// A batch of device reports.
    ReportBatch,
}

impl DocKind {
    /// The domain-separation tag prefixed to the payload before signing.
    pub fn signing_tag(self) -> &'static [u8] {
        match self {
            DocKind::Root => b"ferry/root/v1\0",
            DocKind::Manifest => b"ferry/manifest/v1\0",
            DocKind::Index => b"ferry/index/v1\0",
            DocKind::ReportBatch => b"ferry/report-batch/v1\0",
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            DocKind::Root => "trust root",
            DocKind::Manifest => "release manifest",
            DocKind::Index => "channel index",
            DocKind::ReportBatch => "report batch",
        }
    }
}

/// One signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Which key signed.
    pub key_id: KeyId,
    /// The Ed25519 signature over `tag || payload`.
    #[serde(with = "crate::bytes")]
    pub sig: [u8; 64],
}

/// A signed document as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_FORMAT`].
    pub format: u8,
    /// What the payload claims to be (verification uses the kind the caller expects).
    pub kind: DocKind,
    /// The exact signed payload bytes (a postcard-encoded document).
    pub payload: Vec<u8>,
    /// Signatures over `kind.signing_tag() || payload`.
    pub signatures: Vec<Signature>,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than the limit.
    #[error("{kind} of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { kind: &'static str, size: usize, limit: usize },
    /// Bytes that are not an envelope (or a document that does not decode).
    #[error("{what} does not decode: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A format version this build does not know.
    #[error("{what} format version {version} is not supported")]
    Unsupported { what: &'static str, version: u32 },
    /// The envelope claims another kind of document.
    #[error("expected a {expected}, found a {found}")]
    WrongKind { expected: &'static str, found: &'static str },
    /// No valid signature by a key of the role.
    #[error("{kind} carries no valid signature by a {role} key")]
    NoValidSignature { kind: &'static str, role: &'static str },
    /// Some valid signatures, too few distinct keys.
    #[error("{kind} is signed by {valid} distinct {role} key(s); threshold is {threshold}")]
    BelowThreshold { kind: &'static str, role: &'static str, valid: usize, threshold: u32 },
}

impl EnvelopeError {
    /// The typed reason.
    pub fn reason(&self) -> Reason {
        match self {
            EnvelopeError::TooLarge { .. } => Reason::SizeExceeded,
            EnvelopeError::Malformed { .. } => Reason::Malformed,
            EnvelopeError::Unsupported { .. } => Reason::Unsupported,
            EnvelopeError::WrongKind { .. } | EnvelopeError::NoValidSignature { .. } => Reason::Signature,
            EnvelopeError::BelowThreshold { .. } => Reason::Threshold,
        }
    }
}

/// Keys and threshold that a role requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Authorised key ids.
    pub keys: Vec<KeyId>,
    /// Distinct authorised keys that must sign.
    pub threshold: u32,
}

impl Envelope {
    /// Signs `payload` as a document of `kind` with every key given.
    pub fn sign(kind: DocKind, payload: Vec<u8>, keys: &[&SigningKey]) -> Envelope {
        let mut env = Envelope { format: ENVELOPE_FORMAT, kind, payload, signatures: Vec::new() };
        for key in keys {
            env.add_signature(key);
        }
        env
    }

    /// Adds one signature (replacing an earlier one by the same key).
    pub fn add_signature(&mut self, key: &SigningKey) {
        let id = key.public().id();
        self.signatures.retain(|s| s.key_id != id);
        let sig = key.sign(&signing_message(self.kind, &self.payload));
        self.signatures.push(Signature { key_id: id, sig });
    }

    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes, checking the size limit before anything else.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > limits.max_envelope {
            return Err(EnvelopeError::TooLarge { kind: "envelope", size: bytes.len(), limit: limits.max_envelope });
        }
        let (env, rest): (Envelope, &[u8]) = postcard::take_from_bytes(bytes)
            .map_err(|e| EnvelopeError::Malformed { what: "envelope", detail: e.to_string() })?;
        if !rest.is_empty() {
            return Err(EnvelopeError::Malformed {
                what: "envelope",
                detail: format!("{} trailing bytes", rest.len()),
            });
        }
        if env.format != ENVELOPE_FORMAT {
            return Err(EnvelopeError::Unsupported { what: "envelope", version: env.format.into() });
        }
        if env.signatures.len() > limits.max_signatures {
            return Err(EnvelopeError::TooLarge {
                kind: "signature list",
                size: env.signatures.len(),
                limit: limits.max_signatures,
            });
        }
        Ok(env)
    }

    /// Checks that distinct keys of `role` (looked up in `keys`) meet its threshold with
    /// valid signatures over `expected`'s tag and the payload.
    pub fn verify_role(
        &self,
        expected: DocKind,
        role_name: &'static str,
        role: &Role,
        keys: &BTreeMap<KeyId, PublicKey>,
    ) -> Result<(), EnvelopeError> {
        if self.kind != expected {
            return Err(EnvelopeError::WrongKind { expected: expected.name(), found: self.kind.name() });
        }
        let message = signing_message(expected, &self.payload);
        let authorised: BTreeSet<&KeyId> = role.keys.iter().collect();
        let mut valid = BTreeSet::new();
        for s in &self.signatures {
            if !authorised.contains(&s.key_id) || valid.contains(&s.key_id) {
                continue;
            }
            if let Some(key) = keys.get(&s.key_id) {
                if key.verify(&message, &s.sig) {
                    valid.insert(s.key_id);
                }
            }
        }
        let threshold = role.threshold.max(1);
        if valid.len() >= threshold as usize {
            Ok(())
        } else if valid.is_empty() {
            Err(EnvelopeError::NoValidSignature { kind: expected.name(), role: role_name })
        } else {
            Err(EnvelopeError::BelowThreshold { kind: expected.name(), role: role_name, valid: valid.len(), threshold })
        }
    }
}

fn signing_message(kind: DocKind, payload: &[u8]) -> Vec<u8> {
    let tag = kind.signing_tag();
    let mut m = Vec::with_capacity(tag.len() + payload.len());
    m.extend_from_slice(tag);
    m.extend_from_slice(payload);
    m
}

/// Decodes a postcard document that must fill `bytes` exactly.
pub fn decode_document<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, EnvelopeError> {
    let (doc, rest): (T, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| EnvelopeError::Malformed { what, detail: e.to_string() })?;
    if !rest.is_empty() {
        return Err(EnvelopeError::Malformed { what, detail: format!("{} trailing bytes", rest.len()) });
    }
    Ok(doc)
}

/// Encodes a document with postcard.
pub fn encode_document<T: Serialize>(doc: &T) -> Vec<u8> {
    postcard::to_stdvec(doc).unwrap_or_default()
}
