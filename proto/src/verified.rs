//! `Verified<T>`: a document that passed signature verification.
//!
//! There is no public constructor: the only way to hold one is to get it from the
//! verifying functions of [`crate::trust::VerifiedRoot`]. Code that writes a slot takes
//! this type, never raw bytes.

use std::ops::Deref;

use crate::digest::Sha256Digest;

/// A verified document with the digest and bytes of the envelope it came from.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    value: T,
    envelope: Vec<u8>,
    digest: Sha256Digest,
}

impl<T> Verified<T> {
    pub(crate) fn new(value: T, envelope: Vec<u8>) -> Verified<T> {
        let digest = Sha256Digest::of(&envelope);
        Verified { value, envelope, digest }
    }

    /// The envelope bytes exactly as verified.
    pub fn envelope_bytes(&self) -> &[u8] {
        &self.envelope
    }

    /// SHA-256 of the envelope bytes: the document's content address.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}
