//! The operator's name for a device, validated once: it keys the fleet database and
//! becomes a file name on a USB stick (`reports/<id>/`, `acks/<id>.ack`), so it must never
//! be able to name another directory.
//!
//! The rule is the agent's `device_id` rule (1–128 printable characters without `/`)
//! narrowed by what a file name needs: no `\`, and not `.` or `..`.

use std::fmt;
use std::str::FromStr;

/// A device id that is safe as a path component and a database key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

/// A string that is not a usable device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device id {shown:?}: must be 1-128 printable characters without '/' or '\\', and not '.' or '..'")]
pub struct DeviceIdError {
    shown: String,
}

impl DeviceId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<DeviceId, DeviceIdError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s != "."
            && s != ".."
            && !s.chars().any(|c| c.is_control() || c == '/' || c == '\\');
        if ok {
            Ok(DeviceId(s.to_owned()))
        } else {
            Err(DeviceIdError { shown: s.chars().take(80).collect() })
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceId;

    #[test]
    fn ids_that_could_name_another_directory_are_refused() {
        for good in ["pump-17", "0123456789abcdef0123456789abcdef", "gateway 7", "a.b", "...", "ü"] {
            assert!(good.parse::<DeviceId>().is_ok(), "{good:?} refused");
        }
        let long = "x".repeat(129);
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a\nb", "a\0b", long.as_str()] {
            assert!(bad.parse::<DeviceId>().is_err(), "{bad:?} accepted");
        }
    }
}
