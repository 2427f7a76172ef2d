//! credhost: a plugin host for deployment credentials.
//!
//! A deployment service embeds this library (or calls the `credhost` binary)
//! to get registry credentials for build jobs, store and fetch project
//! archives, and hand build jobs their environment. Each platform is a plugin
//! library listed in `plugins.toml`; see [`Host`].
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod credhelper;
pub mod disk_cache;
pub mod docker_config;
mod error;
mod host;
pub mod job_env;
pub mod live;
pub mod loader;
pub mod names;
pub mod progress;
pub mod registries;
pub mod token_cache;

pub use credhost_plugin_api as api;
pub use error::{exit, Error, Result};
pub use host::{Host, PluginStatus, ProviderHandle, UploadOptions};
pub use live::{LiveHost, SwitchStatus, WatchOptions};
