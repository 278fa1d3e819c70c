//! Serde helpers for fixed-size byte arrays: hex strings in human-readable formats
//! (JSON for `bundler inspect`), raw bytes in postcard.

use serde::de::{Error as _, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// Serializes `N` bytes as lower-case hex (human-readable) or a byte string (binary).
pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        s.serialize_bytes(bytes)
    }
}

/// Deserializes what [`serialize`] wrote, insisting on exactly `N` bytes.
pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    struct Fixed<const N: usize>;
    impl<const N: usize> Visitor<'_> for Fixed<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes or {} hex digits", 2 * N)
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<[u8; N], E> {
            let mut out = [0u8; N];
            hex::decode_to_slice(v, &mut out).map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))?;
            Ok(out)
        }
    }
    if d.is_human_readable() { d.deserialize_str(Fixed::<N>) } else { d.deserialize_bytes(Fixed::<N>) }
        .map_err(D::Error::custom)
}
