//! A secret string that does not print and is wiped from memory on drop.

use std::fmt;

use abi_stable::{std_types::RVec, StableAbi};
use zeroize::Zeroize;

/// The text printed in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// A secret (password, token, key). `Debug` prints `Secret(<redacted>)`; the
/// bytes are overwritten with zeros when the value is dropped. Read it with
/// [`Secret::expose`], only where it is really needed.
#[repr(C)]
#[derive(StableAbi)]
pub struct Secret {
    bytes: RVec<u8>,
}

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self { bytes: RVec::from(value.into().into_bytes()) }
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        // Built only from `String`s, so always UTF-8; stay panic-free regardless.
        std::str::from_utf8(self.bytes.as_slice()).unwrap_or("")
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// An empty secret: a placeholder until the real one is read (a settings
/// struct's `#[serde(skip)]` field).
impl Default for Secret {
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self::new(self.expose())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.as_slice() == other.bytes.as_slice()
    }
}

impl Eq for Secret {}

impl Drop for Secret {
    fn drop(&mut self) {
        self.bytes.as_mut_slice().zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// A secret serializes as its text: for the message channel between the
/// host and a plugin's child process, never for output.
#[cfg(feature = "serde")]
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut text = String::deserialize(deserializer)?;
        let secret = Secret::new(text.as_str());
        text.zeroize();
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }
}
