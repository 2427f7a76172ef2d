//! Secrets as the library hands them out: text that never prints, is wiped
//! on drop, and serializes as a redaction marker unless the caller asks for
//! it explicitly with [`Revealed`].

use std::{cell::Cell, fmt};

use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

/// The text printed in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// A secret (a password, a token, a presigned URL). `Debug` prints
/// `Secret(<redacted>)`, serializing it writes [`REDACTED`] (unless inside
/// [`Revealed`]), and its bytes are overwritten with zeros when it is
/// dropped. Read it with [`Secret::expose`], only where it is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl<T: Into<String>> From<T> for Secret {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

thread_local! {
    /// How many [`Revealed`] serializations are running on this thread.
    static REVEALING: Cell<u32> = const { Cell::new(0) };
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if REVEALING.with(Cell::get) > 0 {
            serializer.serialize_str(self.expose())
        } else {
            serializer.serialize_str(REDACTED)
        }
    }
}

/// A secret read from input (a request holding a token) is kept as one.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Serializes `T` with its secrets in clear: what a front end prints when
/// the user asked for the secrets (`credhost token --format json`, a
/// presigned URL). Everything else serializes secrets as [`REDACTED`].
///
/// ```
/// let entry = credhost::CredentialEntry::secret("REGISTRY_TOKEN", "s3cr3t".into());
/// assert_eq!(serde_json::to_string(&entry).unwrap(), r#"{"key":"REGISTRY_TOKEN","value":"<redacted>","secret":true}"#);
/// let shown = serde_json::to_string(&credhost::Revealed(&entry)).unwrap();
/// assert_eq!(shown, r#"{"key":"REGISTRY_TOKEN","value":"s3cr3t","secret":true}"#);
/// ```
pub struct Revealed<'a, T: ?Sized>(pub &'a T);

impl<T: Serialize + ?Sized> Serialize for Revealed<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Serialization runs on the calling thread from start to end, so a
        // thread-local depth covers exactly this value's secrets.
        struct Depth;
        impl Drop for Depth {
            fn drop(&mut self) {
                REVEALING.with(|r| r.set(r.get() - 1));
            }
        }
        REVEALING.with(|r| r.set(r.get() + 1));
        let _depth = Depth;
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialization_are_redacted_unless_revealed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(serde_json::to_string(&Revealed(&s)).unwrap(), "\"hunter2\"");
        // The reveal ends with the value it was asked for.
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
