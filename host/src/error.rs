//! The library's error type, classified by what the caller should do next.

use std::{fmt, path::PathBuf, time::Duration};

use credhost_plugin_api::PluginError;

use crate::loader::LoadError;

/// What the caller should do about an [`Error`]. Front ends map kinds to
/// their own vocabulary: the CLI to exit codes, a web service to HTTP
/// statuses, the Python package to exception classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object, bucket, registry or plugin file does not exist: check the
    /// name.
    NotFound,
    /// Credentials are missing, were rejected, or do not allow this: fix the
    /// credentials or their permissions.
    Unauthenticated,
    /// An argument is invalid (a project name, a file, a registry host): fix
    /// the input; retrying the same call cannot help.
    InvalidInput,
    /// The configuration (`plugins.toml` or a plugin's settings) is invalid:
    /// fix the file.
    Config,
    /// A plugin file was refused (missing pin match, unsafe permissions, not
    /// a plugin, incompatible interface): replace or re-pin the file.
    PluginRefused,
    /// The plugin does not offer this operation.
    Unsupported,
    /// The destination exists and replacing it was not asked for.
    AlreadyExists,
    /// A `check` ran and a probe failed (or did not finish).
    CheckFailed,
    /// The service could not be reached or failed; retrying later may help.
    Unavailable,
    /// The operation did not finish within its deadline.
    TimedOut,
    /// The operation was cancelled before it finished.
    Cancelled,
    /// The plugin panicked; it is out of service until it is rebuilt.
    Panicked,
    /// Anything else (a local I/O failure, corrupt data, an internal error).
    Other,
}

impl ErrorKind {
    /// A short lower-case name, e.g. `not found`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Config => "configuration",
            ErrorKind::PluginRefused => "plugin refused",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::CheckFailed => "check failed",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Other => "other",
        }
    }

    /// The library's kind for a plugin's error kind.
    pub fn from_plugin(kind: credhost_plugin_api::ErrorKind) -> Self {
        use credhost_plugin_api::ErrorKind as P;
        match kind {
            P::NOT_FOUND => ErrorKind::NotFound,
            P::UNAUTHENTICATED | P::PERMISSION_DENIED => ErrorKind::Unauthenticated,
            P::CONFIG => ErrorKind::Config,
            P::INVALID_INPUT => ErrorKind::InvalidInput,
            P::ALREADY_EXISTS => ErrorKind::AlreadyExists,
            P::CANCELLED => ErrorKind::Cancelled,
            P::UNSUPPORTED => ErrorKind::Unsupported,
            P::UNAVAILABLE => ErrorKind::Unavailable,
            P::PANICKED => ErrorKind::Panicked,
            _ => ErrorKind::Other,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in the host. Each variant's text is one
/// line and never holds a secret; [`Error::kind`] says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("{location}: {message}")]
    Config {
        /// `file:line` (or just the file, or the variable) of the fault.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// A plugin file could not be loaded.
    #[error("plugin `{plugin}`: {source}")]
    Load {
        /// The plugin (or instance) name from the configuration.
        plugin: String,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// A plugin operation failed.
    #[error("{instance}: {op}: {source}")]
    Plugin {
        /// The instance name.
        instance: String,
        /// The operation, e.g. `upload`.
        op: &'static str,
        /// The plugin's error.
        #[source]
        source: PluginFailure,
    },
    /// A plugin operation did not finish in time; it was cancelled.
    #[error("{instance}: {op}: no answer within {} s; the operation was cancelled", .after.as_secs())]
    Timeout {
        /// The instance name.
        instance: String,
        /// The operation.
        op: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The plugin does not offer the operation.
    #[error("{instance}: {op}: {why}")]
    Unsupported {
        /// The instance name.
        instance: String,
        /// The operation.
        op: &'static str,
        /// Why not, e.g. what the plugin declares.
        why: String,
    },
    /// An argument is invalid (a project name, a file, a registry host).
    #[error("{0}")]
    InvalidInput(String),
    /// The file to upload is not a ZIP archive.
    #[error("{} is not a ZIP archive ({why})", path.display())]
    NotZip {
        /// The file.
        path: PathBuf,
        /// What is missing.
        why: &'static str,
    },
    /// The destination exists and replacing it was not asked for.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// A local I/O failure.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `cannot read`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No loaded instance serves a registry, and the plugin of some instance
    /// that might could not be loaded.
    #[error("no usable instance serves {registry}: {why}")]
    Unresolved {
        /// The registry host.
        registry: String,
        /// The kind of the loading failure.
        kind: ErrorKind,
        /// Which instances could not be loaded, and why.
        why: String,
    },
    /// A provider's `check` failed (or did not finish).
    #[error("{0}")]
    CheckFailed(String),
    /// The host's own machinery failed (a task could not start or ended early).
    #[error("internal error: {0}")]
    Internal(String),
    /// A required audit log could not be written: nothing was handed out.
    #[error("{0}")]
    Audit(String),
    /// A registry of plugin artifacts failed, refused, or sent what does
    /// not match its digest (`plugins push` and `install`).
    #[error("{message}")]
    Registry {
        /// What the caller should do next.
        kind: ErrorKind,
        /// What failed, naming the reference.
        message: String,
    },
}

impl Error {
    /// What the caller should do next.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::Config,
            Error::Load { source, .. } => source.kind(),
            Error::Plugin { source, .. } => source.kind,
            Error::Timeout { .. } => ErrorKind::TimedOut,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::InvalidInput(_) | Error::NotZip { .. } => ErrorKind::InvalidInput,
            Error::Exists(_) => ErrorKind::AlreadyExists,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::Unauthenticated,
                std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                _ => ErrorKind::Other,
            },
            Error::Unresolved { kind, .. } => *kind,
            Error::CheckFailed(_) => ErrorKind::CheckFailed,
            Error::Internal(_) | Error::Audit(_) => ErrorKind::Other,
            Error::Registry { kind, .. } => *kind,
        }
    }

    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Plugin { source, .. } => source.retryable,
            Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The plugin's own error, when a plugin reported this one.
    pub fn plugin_failure(&self) -> Option<&PluginFailure> {
        match self {
            Error::Plugin { source, .. } => Some(source),
            _ => None,
        }
    }

    /// An I/O error about `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { what, path: path.into(), source }
    }
}

/// An error a plugin reported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct PluginFailure {
    /// What the caller should do next.
    pub kind: ErrorKind,
    /// The plugin's finer kind, e.g. `integrity`, `permission denied`, `io`.
    pub plugin_kind: &'static str,
    /// What failed and why, on one line, with no secret (URLs in it are
    /// stripped of their queries and user information).
    pub message: String,
    /// Whether the plugin said that trying again may help.
    pub retryable: bool,
    /// The setting at fault (a dotted path), for settings errors.
    pub setting: Option<String>,
}

impl PluginFailure {
    /// An error a plugin's child process reported as text, with the name of
    /// its kind ([`ErrorKind::name`]).
    pub(crate) fn isolated(kind: &str, message: String) -> Self {
        let kind = [
            ErrorKind::NotFound,
            ErrorKind::Unauthenticated,
            ErrorKind::InvalidInput,
            ErrorKind::Config,
            ErrorKind::PluginRefused,
            ErrorKind::Unsupported,
            ErrorKind::Unavailable,
            ErrorKind::TimedOut,
            ErrorKind::Panicked,
        ]
        .into_iter()
        .find(|k| k.name() == kind)
        .unwrap_or(ErrorKind::Other);
        let message = credhost_plugin_api::rules::scrub_urls(&message);
        Self { kind, plugin_kind: "other", message, retryable: false, setting: None }
    }

    /// The library's account of a plugin's error.
    pub(crate) fn from_api(e: &PluginError) -> Self {
        Self {
            kind: ErrorKind::from_plugin(e.kind),
            plugin_kind: e.kind.name(),
            message: credhost_plugin_api::rules::scrub_urls(&e.message),
            retryable: e.retryable,
            setting: e.config_key().map(str::to_owned),
        }
    }

    #[cfg(test)]
    pub(crate) fn new(kind: credhost_plugin_api::ErrorKind, message: impl Into<String>) -> Self {
        Self::from_api(&PluginError::new(kind, message))
    }
}

impl LoadError {
    /// What the caller should do next: a missing file is not found, every
    /// other reason is a refused plugin.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LoadError::MissingFile(_) => ErrorKind::NotFound,
            _ => ErrorKind::PluginRefused,
        }
    }
}

/// `text` on one line: causes that span lines (an SDK's list of the
/// credential sources it tried) are joined with `; `, and other control
/// characters (a tab, a terminal escape a hostile server put into its
/// error message) become spaces.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(|l| l.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>())
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use credhost_plugin_api::ErrorKind as P;

    #[test]
    fn one_line_joins_lines_and_blanks_control_characters() {
        assert_eq!(one_line("a\n  b\r\n\nc"), "a; b; c");
        assert_eq!(one_line("red \u{1b}[31mtext\ttab\rcr"), "red  [31mtext tab cr");
    }

    #[test]
    fn plugin_kinds_map_to_what_to_do_next() {
        let e = |k| Error::Plugin { instance: "x".into(), op: "upload", source: PluginFailure::new(k, "m") }.kind();
        assert_eq!(e(P::NOT_FOUND), ErrorKind::NotFound);
        assert_eq!(e(P::PERMISSION_DENIED), ErrorKind::Unauthenticated);
        assert_eq!(e(P::UNAVAILABLE), ErrorKind::Unavailable);
        assert_eq!(e(P(999)), ErrorKind::Other);
        let t = Error::Timeout { instance: "aws".into(), op: "token", after: Duration::from_secs(60) };
        assert_eq!(
            (t.kind(), t.to_string().as_str()),
            (ErrorKind::TimedOut, "aws: token: no answer within 60 s; the operation was cancelled")
        );
    }
}
