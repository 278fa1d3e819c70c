//! Ferry's wire contract: keys, trust root, signed envelopes, release manifest, channel
//! index, `.ferry` container, git bundle header parser and typed rejection reasons.
//!
//! No I/O beyond `Read`/`Write`, no async. Every decoder checks its size limits before it
//! allocates, and a verified document can only be obtained by verifying it
//! ([`trust::VerifiedRoot`] is the only source of [`Verified`] values).
#![forbid(unsafe_code)]

pub mod bundle_header;
mod bytes;
pub mod container;
pub mod digest;
pub mod envelope;
pub mod index;
pub mod keys;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod names;
pub mod patch_section;
pub mod payload;
pub mod reason;
pub mod report;
pub mod rollout;
pub mod trust;
pub mod verified;

pub use digest::Sha256Digest;
pub use envelope::{DocKind, Envelope, Role};
pub use index::ChannelIndex;
pub use keys::{KeyId, PublicKey, SigningKey};
pub use limits::Limits;
pub use manifest::ReleaseManifest;
pub use names::{ChannelName, GitOid, ObjectFormat};
pub use reason::Reason;
pub use trust::{TrustRoot, VerifiedRoot};
pub use verified::Verified;
