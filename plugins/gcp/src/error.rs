//! Conversions into the boundary's error type, chosen by what the caller
//! should do next.

use credhost_plugin_sdk::{error_chain, Error as PluginError, ErrorKind};
use reqwest::StatusCode;

/// Whether a failed send or body read may succeed when tried again: no
/// (complete) answer came: refused, reset, timed out, cut mid-body (which
/// reqwest reports as a body "decode" error). Building or redirect errors
/// never heal. JSON is parsed separately, so decoding never means bad JSON.
pub fn is_transient(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect())
}

/// Whether an answer with this status may heal on a retry.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A request that got no answer.
pub fn send_error(what: &str, e: &reqwest::Error) -> PluginError {
    let transient = is_transient(e);
    let kind = if transient { ErrorKind::UNAVAILABLE } else { ErrorKind::OTHER };
    // reqwest's text names the URL, never headers, so no token can leak here.
    PluginError::new(kind, format!("{what}: {}", error_chain(e))).retryable(transient)
}

/// An answer with an unexpected status; `body` is the server's error text.
pub fn status_error(what: &str, status: StatusCode, body: &str) -> PluginError {
    let kind = match status {
        StatusCode::UNAUTHORIZED => ErrorKind::UNAUTHENTICATED,
        StatusCode::FORBIDDEN => ErrorKind::PERMISSION_DENIED,
        StatusCode::NOT_FOUND | StatusCode::GONE => ErrorKind::NOT_FOUND,
        s if is_transient_status(s) => ErrorKind::UNAVAILABLE,
        _ => ErrorKind::OTHER,
    };
    let detail = server_message(body).map(|m| format!(": {m}")).unwrap_or_default();
    PluginError::new(kind, format!("{what}: {status}{detail}")).retryable(is_transient_status(status))
}

/// The message of a Google JSON error (`{"error": {"message": ...}}` or the
/// OAuth form `{"error": "...", "error_description": "..."}`), one line, or
/// the start of a plain-text body.
pub fn server_message(body: &str) -> Option<String> {
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => match &v["error"] {
            serde_json::Value::Object(o) => o.get("message").and_then(|m| m.as_str()).map(str::to_owned),
            serde_json::Value::String(code) => Some(match v["error_description"].as_str() {
                Some(d) if !d.is_empty() => format!("{code}: {d}"),
                _ => code.clone(),
            }),
            _ => None,
        },
        Err(_) => Some(body.to_owned()),
    }?;
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let line =
        if line.chars().count() > 300 { format!("{}...", line.chars().take(300).collect::<String>()) } else { line };
    (!line.is_empty()).then_some(line)
}

pub use credhost_plugin_sdk::api::sdk::io_error;

/// The longest answer read from a token endpoint, the metadata server or the
/// JSON API (not object data): they are a few KiB, and a larger one is a
/// fault or an attack on memory.
pub const MAX_ANSWER: usize = 1 << 20;

/// Reads an answer's body as text, at most [`MAX_ANSWER`] bytes.
pub async fn read_text(mut resp: reqwest::Response, what: &str) -> Result<String, PluginError> {
    let too_long =
        || PluginError::new(ErrorKind::OTHER, format!("{what}: the answer is longer than {MAX_ANSWER} bytes"));
    if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(too_long());
    }
    let mut body = zeroize::Zeroizing::new(Vec::new());
    while let Some(chunk) = resp.chunk().await.map_err(|e| send_error(what, &e))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A task of the plugin runtime failed to run to completion.
pub fn join_error(what: &str, e: tokio::task::JoinError) -> PluginError {
    PluginError::new(ErrorKind::OTHER, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_error_shapes() {
        assert_eq!(
            server_message(r#"{"error":{"code":404,"message":"No such object: b/o"}}"#).as_deref(),
            Some("No such object: b/o")
        );
        assert_eq!(
            server_message(r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#).as_deref(),
            Some("invalid_grant: Invalid JWT Signature.")
        );
        assert_eq!(server_message("line one\nline two").as_deref(), Some("line one line two"));
        assert_eq!(server_message(""), None);
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(status_error("x", StatusCode::UNAUTHORIZED, "").kind, ErrorKind::UNAUTHENTICATED);
        assert_eq!(status_error("x", StatusCode::FORBIDDEN, "").kind, ErrorKind::PERMISSION_DENIED);
        assert_eq!(status_error("x", StatusCode::NOT_FOUND, "").kind, ErrorKind::NOT_FOUND);
        let e = status_error("x", StatusCode::SERVICE_UNAVAILABLE, "");
        assert_eq!((e.kind, e.retryable), (ErrorKind::UNAVAILABLE, true));
        assert_eq!(status_error("x", StatusCode::BAD_REQUEST, "").kind, ErrorKind::OTHER);
        assert_eq!(status_error("get", StatusCode::NOT_FOUND, "{}").message.as_str(), "get: 404 Not Found");
    }
}
