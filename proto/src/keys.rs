//! Ed25519 keys: PKCS#8 PEM private keys (the format `openssl genpkey -algorithm ed25519`
//! writes), SPKI PEM public keys (`openssl pkey -pubout`), and key ids (SHA-256 of the raw
//! 32-byte public key).

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::digest::Sha256Digest;

/// Errors loading or making keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not an Ed25519 PKCS#8 private key in PEM.
    #[error("not an Ed25519 private key in PKCS#8 PEM: {0}")]
    BadPrivateKey(String),
    /// Not an Ed25519 public key in SPKI PEM.
    #[error("not an Ed25519 public key in PEM: {0}")]
    BadPublicKey(String),
    /// The system's random number generator failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Identifies a key: SHA-256 of its raw public key bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(#[serde(with = "crate::bytes")] pub [u8; 32]);

impl KeyId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", &self.to_hex()[..16])
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// The key's id.
    pub fn id(&self) -> KeyId {
        KeyId(Sha256Digest::of(self.0.as_bytes()).0)
    }

    /// Raw 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// From raw 32 bytes; rejects points that are not valid public keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes).map(PublicKey).map_err(|e| KeyError::BadPublicKey(e.to_string()))
    }

    /// Parses SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map(PublicKey)
            .map_err(|e| KeyError::BadPublicKey(e.to_string()))
    }

    /// SPKI PEM, as `openssl pkey -pubout` writes.
    pub fn to_pem(&self) -> String {
        self.0.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF).unwrap_or_default()
    }

    /// Strict verification (rejects small-order keys and non-canonical signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok() && self.0.verify(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({:?})", self.id())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::bytes::serialize(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: [u8; 32] = crate::bytes::deserialize(d)?;
        PublicKey::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// An Ed25519 private key. Never printed, never logged.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed));
        seed.fill(0);
        Ok(key)
    }

    /// Parses PKCS#8 PEM (v1 as OpenSSL writes it, or v2 with the public key).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map(SigningKey)
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))
    }

    /// PKCS#8 v1 PEM, the form OpenSSL writes and reads.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let pair = KeypairBytes { secret_key: self.0.to_bytes(), public_key: None };
        pair.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {:?})", self.public().id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_sign() {
        let k = SigningKey::generate().expect("rng");
        let pem = k.to_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = SigningKey::from_pem(&pem).expect("parse");
        assert_eq!(k.public(), k2.public());
        let p = PublicKey::from_pem(&k.public().to_pem()).expect("pub");
        let sig = k2.sign(b"m");
        assert!(p.verify(b"m", &sig));
        assert!(!p.verify(b"n", &sig));
    }

    #[test]
    fn openssl_written_key_loads() {
        // RFC 8410 section 10.3 example key, as `openssl genpkey -algorithm ed25519` writes it.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let k = SigningKey::from_pem(pem).expect("openssl key");
        assert_eq!(
            hex::encode(k.public().to_bytes()),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
        assert!(SigningKey::from_pem("garbage").is_err());
    }
}
