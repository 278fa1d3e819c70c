//! Validated names that end up in paths, git refs and file names: channels, git object
//! ids, object formats, device labels.
//!
//! Each newtype can only be built through its parser, so code that holds one never has to
//! re-check it before putting it into a path.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A value that does not fit its name's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct NameError {
    /// What kind of name.
    pub what: &'static str,
    /// The offending value (truncated).
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

fn name_error(what: &'static str, value: &str, rule: &'static str) -> NameError {
    NameError { what, value: value.chars().take(80).collect(), rule }
}

/// A channel name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
/// It names a mirror directory and a git ref component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ChannelName(String);

impl ChannelName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ChannelName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        const RULE: &str = "1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit";
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && !s.contains("..")
            && !s.ends_with(".lock")
            && !s.ends_with('.');
        if ok {
            Ok(ChannelName(s.to_owned()))
        } else {
            Err(name_error("channel name", s, RULE))
        }
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A git object format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectFormat {
    /// 20-byte SHA-1 object ids.
    Sha1,
    /// 32-byte SHA-256 object ids.
    Sha256,
}

impl ObjectFormat {
    /// `sha1` or `sha256`, as git spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectFormat::Sha1 => "sha1",
            ObjectFormat::Sha256 => "sha256",
        }
    }

    /// Hex digits in an object id of this format.
    pub fn hex_len(self) -> usize {
        match self {
            ObjectFormat::Sha1 => 40,
            ObjectFormat::Sha256 => 64,
        }
    }
}

impl FromStr for ObjectFormat {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match s {
            "sha1" => Ok(ObjectFormat::Sha1),
            "sha256" => Ok(ObjectFormat::Sha256),
            _ => Err(name_error("object format", s, "must be sha1 or sha256")),
        }
    }
}

impl fmt::Display for ObjectFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A git object id in lower-case hex: 40 digits (SHA-1) or 64 (SHA-256).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GitOid(String);

impl GitOid {
    /// The hex id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object format its length implies.
    pub fn format(&self) -> ObjectFormat {
        if self.0.len() == 40 {
            ObjectFormat::Sha1
        } else {
            ObjectFormat::Sha256
        }
    }

    /// True for the all-zero id git uses for "no object".
    pub fn is_null(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

impl FromStr for GitOid {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let ok =
            (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(GitOid(s.to_owned()))
        } else {
            Err(name_error("git object id", s, "40 or 64 lower-case hex digits"))
        }
    }
}

impl<'de> Deserialize<'de> for GitOid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for GitOid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GitOid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a device label key (`site`, `hw.rev`): 1–64 of `a-z A-Z 0-9 . _ -`.
pub fn check_label_key(key: &str) -> Result<(), NameError> {
    let ok = (1..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(name_error("label key", key, "1-64 characters of letters, digits, '.', '_', '-'"))
    }
}

/// Checks a device label value: at most 256 printable characters, no control characters.
pub fn check_label_value(value: &str) -> Result<(), NameError> {
    if value.len() <= 256 && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(name_error("label value", value, "at most 256 characters, none of them control characters"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for good in ["stable", "plant-7", "a", "v1.2_beta"] {
            assert!(good.parse::<ChannelName>().is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "A", "a..b", "x.lock", "dot.", "sp ace", &"x".repeat(65)] {
            assert!(bad.parse::<ChannelName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn oids() {
        assert!("0123456789abcdef0123456789abcdef01234567".parse::<GitOid>().is_ok());
        assert!("0123456789ABCDEF0123456789abcdef01234567".parse::<GitOid>().is_err());
        assert!("0123".parse::<GitOid>().is_err());
        assert_eq!("a".repeat(64).parse::<GitOid>().map(|o| o.format()).ok(), Some(ObjectFormat::Sha256));
    }
}
