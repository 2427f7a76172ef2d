//! The registry patterns a configuration may name: `host[:port]`, or a
//! `*.suffix` wildcard. A leaf module, so that reading a configuration and
//! routing registries to instances can both use it.

use credhost_plugin_api::rules::registry_host;

use crate::{Error, Result};

/// Checks a `[registries]` key: `host[:port]`, or `*.suffix`.
pub fn check_pattern(pattern: &str) -> std::result::Result<(), String> {
    let host = match pattern.strip_prefix("*.") {
        Some(rest) => rest,
        None if pattern.starts_with('*') => {
            return Err("a wildcard is `*.` followed by a domain, e.g. `*.example.com`".into())
        }
        None => pattern,
    };
    if host.is_empty() {
        return Err("it is empty".into());
    }
    if pattern.contains("://") {
        return Err("give the host (and port), not a URL".into());
    }
    if let Some(c) =
        host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']')))
    {
        return Err(format!("`{}` is not allowed in a registry host", c.escape_default()));
    }
    if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err("empty domain label".into());
    }
    Ok(())
}

/// Whether `host` matches the wildcard `*.suffix` given as its `.suffix`:
/// any host ending in it, never the bare domain.
pub(crate) fn wildcard_matches(dot_suffix: &str, host: &str) -> bool {
    host.len() > dot_suffix.len() && host.ends_with(dot_suffix)
}

/// The `host[:port]` of `server` (a host or URL, as a client sends it),
/// refused unless it is one: what clients send may hold anything (line
/// breaks, terminal escapes), and the host ends up in logs and messages.
/// The message names the host only: the rest of a URL may hold a password.
pub fn checked_host(server: &str) -> Result<String> {
    let host = registry_host(server);
    let why = if host.is_empty() {
        Some("it names no host".to_owned())
    } else if host.starts_with('*') {
        Some("a wildcard is not a registry".to_owned())
    } else {
        check_pattern(&host).err()
    };
    match why {
        Some(why) => {
            Err(Error::InvalidInput(format!("invalid registry host \"{}\": {why}", crate::names::printable(&host))))
        }
        None => Ok(host),
    }
}
