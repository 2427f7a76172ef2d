//! Conversions into the boundary's error type.

use credhost_plugin_api::{ErrorKind, PluginError};

pub use credhost_plugin_api::sdk::io_error;

/// An HTTP failure talking to the registry.
pub fn http_error(what: &str, e: &reqwest::Error) -> PluginError {
    let retryable = e.is_connect() || e.is_timeout();
    let kind = if retryable { ErrorKind::UNAVAILABLE } else { ErrorKind::OTHER };
    // reqwest's Display includes the URL but never credentials (they travel in headers).
    PluginError::new(kind, format!("{what}: {}", credhost_plugin_api::sdk::error_chain(e))).retryable(retryable)
}
