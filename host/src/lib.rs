//! credhost: a plugin host for deployment credentials.
//!
//! A deployment service embeds this library to get registry credentials for
//! build jobs, store and fetch project archives, and hand build jobs their
//! environment. Each platform is a plugin library, and `plugins.toml` names
//! the instances of plugins and which one is active; see [`Host`], and
//! [`LiveHost`] for a service that follows edits of the file.
//!
//! The library prints nothing and knows nothing of terminals, flags or exit
//! codes: it logs through `tracing`, and its errors carry an
//! [`ErrorKind`] saying what the caller should do next.
#![warn(missing_docs)]

pub mod audit;
pub mod config;
mod disk_cache;
mod error;
mod grant;
mod guard;
mod host;
pub mod isolation;
pub mod kubelet;
mod live;
pub mod loader;
pub mod names;
pub mod oci;
pub mod patterns;
mod provider;
pub mod registries;
mod resolver;
mod secret;
mod services;
mod staging;
mod token_cache;
mod types;

/// The plugin interface, for code that works at that level (plugin
/// loaders, tests); the library's own API never hands out its types.
pub use credhost_plugin_api as api;
pub use disk_cache::default_dir as default_cache_dir;
pub use error::{one_line, Error, ErrorKind, PluginFailure, Result};
pub use grant::{
    rfc3339, validate_repository, Grant, GrantPart, GrantRequest, RegistryScope, DEFAULT_GRANT_TTL, MAX_GRANT_TTL,
    MIN_GRANT_TTL,
};
pub use host::{Host, PluginStatus};
pub use live::{LiveHost, SwitchStatus, WatchOptions};
pub use provider::{DownloadOptions, Progress, ProviderHandle, UploadOptions, MAX_PRESIGN_SECS};
pub use resolver::Registries;
pub use secret::{Revealed, Secret, REDACTED};
pub use types::{
    unix_seconds, AuthForm, AuthKind, CheckItem, CheckReport, CreateOnlySupport, CredentialEntry, Operation,
    PluginInfo, PresignMethod, Presigned, ProcessState, RegistryAuth, TransferResult,
};
