//! The library's errors as the exception classes of `credhost._errors`.

use credhost::ErrorKind;
use pyo3::{prelude::*, sync::PyOnceLock, types::PyModule};

/// The exception class and the `kind` string for a library error kind.
fn class_of(kind: ErrorKind) -> (&'static str, &'static str) {
    match kind {
        ErrorKind::NotFound => ("NotFound", "not_found"),
        ErrorKind::Unauthenticated => ("AuthError", "unauthenticated"),
        ErrorKind::InvalidInput => ("InvalidInput", "invalid_input"),
        ErrorKind::Config => ("ConfigError", "config"),
        ErrorKind::PluginRefused => ("PluginRefused", "plugin_refused"),
        ErrorKind::Unsupported => ("Unsupported", "unsupported"),
        ErrorKind::AlreadyExists => ("AlreadyExists", "already_exists"),
        ErrorKind::CheckFailed => ("CheckFailed", "check_failed"),
        ErrorKind::Unavailable => ("Unavailable", "unavailable"),
        ErrorKind::TimedOut => ("Timeout", "timed_out"),
        ErrorKind::Cancelled => ("Cancelled", "cancelled"),
        ErrorKind::Panicked => ("Panicked", "panicked"),
        // `Other`, and kinds added to the library later.
        _ => ("Error", "other"),
    }
}

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    Ok(MODULE.get_or_try_init(py, || py.import("credhost._errors").map(Bound::unbind))?.bind(py))
}

/// An exception of class `class` (of `credhost._errors`) saying `message`.
pub fn raise(py: Python<'_>, class: &str, kind: &str, message: &str, retryable: bool) -> PyErr {
    let made = errors_module(py).and_then(|m| m.getattr(class)).and_then(|c| c.call1((message, kind, retryable)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// The exception for a library error. Its message is the library's, on one
/// line; the library's messages never hold a secret.
pub fn from_lib(py: Python<'_>, e: &credhost::Error) -> PyErr {
    let (class, kind) = class_of(e.kind());
    raise(py, class, kind, &credhost::one_line(&e.to_string()), e.is_retryable())
}

/// The operation was cancelled through its cancel token.
pub fn cancelled(py: Python<'_>, what: &str) -> PyErr {
    raise(py, "Cancelled", "cancelled", &format!("{what}: cancelled"), false)
}

/// A failure of the binding's own machinery (no runtime could be started).
pub fn internal(py: Python<'_>, message: &str) -> PyErr {
    raise(py, "Error", "other", message, false)
}
