//! Key parsing: `SigningKey::from_pem`, `PublicKey::from_pem` and `PublicKey::from_bytes`.
//!
//! The first byte selects the mode: even means the rest is the PEM text as is; odd means the
//! rest is wrapped in PEM armour (private or public, by the next byte) around its base64, so
//! the fuzzer reaches the DER parsers. Properties: a key that loads writes PEM that loads
//! back to the same key; a loaded private key's signatures verify under its public key and
//! not over another message.
#![no_main]

use base64::Engine as _;
use ferry_proto::{PublicKey, SigningKey};
use libfuzzer_sys::fuzz_target;

fn check_private(pem: &str) {
    let Ok(key) = SigningKey::from_pem(pem) else { return };
    let again = SigningKey::from_pem(&key.to_pem().expect("a loaded key writes PEM")).expect("written PEM loads");
    assert_eq!(again.public(), key.public());
    let sig = key.sign(b"ferry");
    assert!(key.public().verify(b"ferry", &sig));
    assert!(!key.public().verify(b"ferrz", &sig));
}

fn check_public(pem: &str) {
    let Ok(key) = PublicKey::from_pem(pem) else { return };
    assert_eq!(PublicKey::from_pem(&key.to_pem()).ok(), Some(key));
    assert_eq!(PublicKey::from_bytes(&key.to_bytes()).ok(), Some(key));
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    if let Some(bytes) = rest.first_chunk::<32>() {
        if let Ok(key) = PublicKey::from_bytes(bytes) {
            assert_eq!(&key.to_bytes(), bytes);
            assert_eq!(key.id(), PublicKey::from_bytes(bytes).expect("again").id());
        }
    }
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        check_private(&text);
        check_public(&text);
    } else {
        let Some((kind, der)) = rest.split_first() else { return };
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let label = if kind % 2 == 0 { "PRIVATE KEY" } else { "PUBLIC KEY" };
        let text = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
        check_private(&text);
        check_public(&text);
    }
});
