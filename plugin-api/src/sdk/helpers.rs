//! What a plugin gets at construction besides its settings, and helpers for
//! settings and errors.

use std::{io, path::PathBuf};

use super::host_error;
use crate::{ErrorKind, PluginError};

/// What the host tells a plugin at construction, besides its settings.
#[derive(Clone, Debug)]
pub struct Context {
    /// The directory relative paths in the settings are relative to (the
    /// configuration file's): always an absolute path.
    pub base_dir: PathBuf,
}

impl Context {
    /// Resolves a path from the settings against [`Context::base_dir`].
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Deserializes a plugin's settings, turning errors into [`ErrorKind::CONFIG`]
/// errors that name the setting at fault (use `#[serde(deny_unknown_fields)]`
/// so that misspelt keys are reported rather than ignored).
pub fn parse_settings<T: serde::de::DeserializeOwned>(settings: serde_json::Value) -> Result<T, PluginError> {
    serde_path_to_error::deserialize(settings).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // The host prefixes the key (and its file and line); the message is the cause.
        let key = if path == "." { String::new() } else { path };
        PluginError::config(&key, inner)
    })
}

/// `error: cause: cause`, each layer once. Errors cross the boundary as
/// text, so a plugin folds the `source()` chain into the message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
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

/// An I/O error about a local file as a plugin error. An error that carries
/// the host's own error (a failing byte source or sink) passes it through.
pub fn io_error(what: &str, path: &std::path::Path, e: &io::Error) -> PluginError {
    if let Some(host) = host_error(e) {
        return host.clone();
    }
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NOT_FOUND,
        io::ErrorKind::PermissionDenied => ErrorKind::PERMISSION_DENIED,
        _ => ErrorKind::IO,
    };
    PluginError::new(kind, format!("{what} {}: {e}", path.display()))
}

/// Reads a secret from the environment variable named by setting `key`.
pub fn secret_from_env(key: &str, var: &str) -> Result<crate::Secret, PluginError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(crate::Secret::new(v)),
        Ok(_) => Err(PluginError::config(key, format!("environment variable {var} (named by `{key}`) is empty"))),
        Err(std::env::VarError::NotPresent) => {
            Err(PluginError::config(key, format!("environment variable {var} (named by `{key}`) is not set")))
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(PluginError::config(
            key,
            format!("environment variable {var} (named by `{key}`) is set but not valid UTF-8 text"),
        )),
    }
}
