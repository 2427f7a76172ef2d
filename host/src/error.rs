//! The host's error type, chosen by what the caller should do next.

use std::path::PathBuf;

use credhost_plugin_api::{ErrorKind, PluginError};

/// Process exit codes of the `credhost` binary, one per class of failure.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Anything not covered below (I/O, unavailable service, plugin failure).
    pub const OTHER: i32 = 1;
    /// Bad command line, configuration or input (names, files, settings).
    pub const USAGE: i32 = 2;
    /// The bucket, object, plugin or registry was not found.
    pub const NOT_FOUND: i32 = 3;
    /// Credentials were missing, rejected or not allowed to do this.
    pub const AUTH: i32 = 4;
    /// A plugin file could not be loaded (refused, incompatible, broken).
    pub const PLUGIN: i32 = 5;
    /// `check` ran and a probe failed.
    pub const CHECK_FAILED: i32 = 6;
    /// The destination exists and `--force` was not given.
    pub const EXISTS: i32 = 7;
    /// Interrupted by a signal.
    pub const INTERRUPTED: i32 = 130;
}

/// Everything that can go wrong in the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file is invalid.
    #[error("{location}: {message}")]
    Config {
        /// `file:line` (or just the file) of the fault.
        location: String,
        /// What is wrong, one line.
        message: String,
    },
    /// A plugin file could not be loaded.
    #[error("plugin `{plugin}`: {source}")]
    Load {
        /// The plugin name from the configuration.
        plugin: String,
        /// Why.
        #[source]
        source: crate::loader::LoadError,
    },
    /// A plugin operation failed.
    #[error("{plugin}: {op}: {source}")]
    Plugin {
        /// Plugin name.
        plugin: String,
        /// The operation, e.g. `upload`.
        op: &'static str,
        /// The plugin's error.
        #[source]
        source: PluginError,
    },
    /// An argument is invalid (project name, file).
    #[error("{0}")]
    InvalidInput(String),
    /// The destination exists.
    #[error("{} already exists (use --force to overwrite)", .0.display())]
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
    /// A provider's `check` failed (or did not finish).
    #[error("{0}")]
    CheckFailed(String),
    /// The request cannot be answered in the form asked for.
    #[error("{0}")]
    Unsupported(String),
    /// The host's async runtime failed (a task panicked or could not start).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The exit code the CLI uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::InvalidInput(_) => exit::USAGE,
            Error::Load { source, .. } => source.exit_code(),
            Error::Plugin { source, .. } => match source.kind {
                ErrorKind::NOT_FOUND => exit::NOT_FOUND,
                ErrorKind::UNAUTHENTICATED | ErrorKind::PERMISSION_DENIED => exit::AUTH,
                ErrorKind::CONFIG | ErrorKind::INVALID_INPUT => exit::USAGE,
                ErrorKind::ALREADY_EXISTS => exit::EXISTS,
                ErrorKind::CANCELLED => exit::INTERRUPTED,
                _ => exit::OTHER,
            },
            Error::Exists(_) => exit::EXISTS,
            Error::CheckFailed(_) => exit::CHECK_FAILED,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => exit::NOT_FOUND,
            Error::Io { .. } | Error::Unsupported(_) | Error::Internal(_) => exit::OTHER,
        }
    }

    /// The plugin error kind, when a plugin reported this error.
    pub fn plugin_kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Plugin { source, .. } => Some(source.kind),
            _ => None,
        }
    }

    /// An I/O error about `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { what, path: path.into(), source }
    }
}

/// The host's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
