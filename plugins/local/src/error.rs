//! Conversions into the boundary's error type.

use credhost_plugin_sdk::{error_chain, Error, ErrorKind};

/// An HTTP failure talking to the registry or its token server. (The host
/// strips user information and queries from URLs in every message.)
pub fn http_error(what: &str, e: &reqwest::Error) -> Error {
    let retryable = e.is_connect() || e.is_timeout();
    let kind = if retryable { ErrorKind::UNAVAILABLE } else { ErrorKind::OTHER };
    Error::new(kind, format!("{what}: {}", error_chain(e))).retryable(retryable)
}
