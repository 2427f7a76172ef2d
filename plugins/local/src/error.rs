//! Conversions into the boundary's error type.

use credhost_plugin_api::{ErrorKind, PluginError};

/// An I/O error on a local file, as a plugin error.
pub fn io_error(what: &str, path: &std::path::Path, e: &std::io::Error) -> PluginError {
    if let Some(host) = credhost_plugin_api::sdk::host_error(e) {
        return host.clone();
    }
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NOT_FOUND,
        std::io::ErrorKind::PermissionDenied => ErrorKind::PERMISSION_DENIED,
        _ => ErrorKind::IO,
    };
    PluginError::new(kind, format!("{what} {}: {e}", path.display()))
}

/// An HTTP failure talking to the registry.
pub fn http_error(what: &str, e: &reqwest::Error) -> PluginError {
    let retryable = e.is_connect() || e.is_timeout();
    let kind = if retryable { ErrorKind::UNAVAILABLE } else { ErrorKind::OTHER };
    // reqwest's Display includes the URL but never credentials (they travel in headers).
    PluginError::new(kind, format!("{what}: {}", chain(e))).retryable(retryable)
}

/// A transfer-crate error as a plugin error.
pub fn transfer_error(e: credhost_s3_transfer::TransferError) -> PluginError {
    use credhost_s3_transfer::TransferErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NOT_FOUND,
        K::Unauthenticated => ErrorKind::UNAUTHENTICATED,
        K::PermissionDenied => ErrorKind::PERMISSION_DENIED,
        K::InvalidInput => ErrorKind::INVALID_INPUT,
        K::Unavailable => ErrorKind::UNAVAILABLE,
        K::Integrity => ErrorKind::INTEGRITY,
        K::Io => ErrorKind::IO,
        _ => ErrorKind::OTHER,
    };
    PluginError::new(kind, chain(&e)).retryable(e.is_retryable())
}

/// `error: cause: cause`, each layer once, for a message that crosses the
/// boundary as text.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}
