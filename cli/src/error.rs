//! The command line's errors and exit codes.

use credhost::ErrorKind;

/// Process exit codes, one per class of failure (documented in the README).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Anything not covered below (I/O, unavailable service, plugin failure).
    pub const OTHER: i32 = 1;
    /// Bad command line, configuration or input (names, files, settings).
    pub const USAGE: i32 = 2;
    /// The bucket, object, plugin file or registry was not found.
    pub const NOT_FOUND: i32 = 3;
    /// Credentials were missing, rejected or not allowed to do this.
    pub const AUTH: i32 = 4;
    /// A plugin file was refused (not a plugin, incompatible, pin or permissions).
    pub const PLUGIN: i32 = 5;
    /// `check` ran and a probe failed.
    pub const CHECK_FAILED: i32 = 6;
    /// The destination exists and `--force` was not given.
    pub const EXISTS: i32 = 7;
    /// Interrupted by a signal.
    pub const INTERRUPTED: i32 = 130;
    /// Standard output was closed by its reader (a pipe to `head`).
    pub const BROKEN_PIPE: i32 = 141;
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The library failed.
    #[error(transparent)]
    Lib(#[from] credhost::Error),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// Standard output could not be written.
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
}

/// The command line's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Lib(e) => exit_code(e.kind()),
            Error::Usage(_) => exit::USAGE,
            Error::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::BROKEN_PIPE,
            Error::Stdout(_) => exit::OTHER,
        }
    }

    /// The message, on one line, with a hint naming the flag that would help.
    pub fn message(&self) -> String {
        let text = credhost::one_line(&self.to_string());
        match self {
            Error::Lib(credhost::Error::Exists(_)) => format!("{text} (use --force to overwrite)"),
            Error::Lib(credhost::Error::NotZip { .. }) => format!("{text}; use --no-verify to upload it anyway"),
            _ => text,
        }
    }

    /// Whether the error is worth no message: the reader of standard output
    /// went away, which the user did on purpose.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Error::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// The exit code for a library error kind.
pub fn exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Config | ErrorKind::InvalidInput => exit::USAGE,
        ErrorKind::NotFound => exit::NOT_FOUND,
        ErrorKind::Unauthenticated => exit::AUTH,
        ErrorKind::PluginRefused => exit::PLUGIN,
        ErrorKind::CheckFailed => exit::CHECK_FAILED,
        ErrorKind::AlreadyExists => exit::EXISTS,
        ErrorKind::Cancelled => exit::INTERRUPTED,
        _ => exit::OTHER,
    }
}
