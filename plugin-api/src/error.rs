//! Errors as data: a kind the host can act on, a message, and whether a retry may help.

use std::fmt;

use abi_stable::{
    std_types::{RHashMap, RResult, RString},
    StableAbi,
};

/// What the caller should do about an error. A `u32` newtype rather than an
/// enum so that later interface versions can add kinds without breaking older
/// hosts: an unknown value reads as [`ErrorKind::OTHER`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ErrorKind(pub u32);

impl ErrorKind {
    /// Anything not covered by a more specific kind.
    pub const OTHER: Self = Self(0);
    /// The plugin (or this plugin version) does not offer the operation.
    pub const UNSUPPORTED: Self = Self(1);
    /// The plugin's settings are invalid; `extra["key"]` names the setting.
    pub const CONFIG: Self = Self(2);
    /// An argument (project name, file, registry host) is invalid.
    pub const INVALID_INPUT: Self = Self(3);
    /// The bucket, object or registry does not exist.
    pub const NOT_FOUND: Self = Self(4);
    /// Credentials were missing or rejected.
    pub const UNAUTHENTICATED: Self = Self(5);
    /// Credentials were accepted but do not allow the operation.
    pub const PERMISSION_DENIED: Self = Self(6);
    /// The service could not be reached or answered with a server error.
    pub const UNAVAILABLE: Self = Self(7);
    /// A local file could not be read or written.
    pub const IO: Self = Self(8);
    /// Transferred data failed a size or checksum check.
    pub const INTEGRITY: Self = Self(9);
    /// The destination exists and overwriting was not asked for.
    pub const ALREADY_EXISTS: Self = Self(10);
    /// The plugin panicked; the panic was caught at the boundary.
    pub const PANICKED: Self = Self(11);
    /// The operation was cancelled before it finished.
    pub const CANCELLED: Self = Self(12);

    /// A short lower-case name for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::UNSUPPORTED => "unsupported",
            Self::CONFIG => "config",
            Self::INVALID_INPUT => "invalid input",
            Self::NOT_FOUND => "not found",
            Self::UNAUTHENTICATED => "unauthenticated",
            Self::PERMISSION_DENIED => "permission denied",
            Self::UNAVAILABLE => "unavailable",
            Self::IO => "io",
            Self::INTEGRITY => "integrity",
            Self::ALREADY_EXISTS => "already exists",
            Self::PANICKED => "panicked",
            Self::CANCELLED => "cancelled",
            _ => "other",
        }
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorKind({}: {})", self.0, self.name())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error crossing the plugin boundary.
///
/// Messages are for people and never contain secrets; programs decide on
/// [`PluginError::kind`] and [`PluginError::retryable`].
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PluginError {
    /// What the caller should do next.
    pub kind: ErrorKind,
    /// One line, lower case, saying what failed and why.
    pub message: RString,
    /// Whether trying the same call again may succeed.
    pub retryable: bool,
    /// Structured details; known keys: `key` (the setting at fault, dotted path).
    pub extra: RHashMap<RString, RString>,
}

impl PluginError {
    /// An error of `kind` with `message`, not retryable.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: RString::from(message.into()), retryable: false, extra: RHashMap::new() }
    }

    /// Marks the error as one a retry may cure.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// A settings error about `key` (a dotted path such as `storage.kind`).
    pub fn config(key: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CONFIG, message).with_config_key(key)
    }

    /// The setting at fault, for [`ErrorKind::CONFIG`] errors.
    pub fn config_key(&self) -> Option<&str> {
        self.extra.get(crate::extra::keys::KEY).map(|k| k.as_str())
    }

    /// The operation is not offered by this plugin.
    pub fn unsupported(what: &str) -> Self {
        Self::new(ErrorKind::UNSUPPORTED, format!("{what} is not supported by this plugin"))
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// A local I/O error, by what the caller should do next. An error that
/// carries a [`PluginError`] (a failing host byte source or sink, wrapped
/// into an `io::Error` on the way) comes back as that error.
impl From<std::io::Error> for PluginError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<PluginError>()) {
            return inner.clone();
        }
        let (kind, retryable) = match e.kind() {
            Io::NotFound => (ErrorKind::NOT_FOUND, false),
            Io::PermissionDenied => (ErrorKind::PERMISSION_DENIED, false),
            Io::AlreadyExists => (ErrorKind::ALREADY_EXISTS, false),
            Io::InvalidInput | Io::InvalidData => (ErrorKind::INVALID_INPUT, false),
            Io::TimedOut | Io::ConnectionRefused | Io::ConnectionReset | Io::ConnectionAborted => {
                (ErrorKind::UNAVAILABLE, true)
            }
            Io::Interrupted => (ErrorKind::CANCELLED, false),
            _ => (ErrorKind::IO, false),
        };
        PluginError::new(kind, e.to_string()).retryable(retryable)
    }
}

/// The result type of every fallible call across the boundary.
pub type PResult<T> = RResult<T, PluginError>;
