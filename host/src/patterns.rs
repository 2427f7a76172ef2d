//! The registry patterns a configuration may name: `host[:port]`, or a
//! wildcard `*.suffix` (`*.*.suffix`, ...) matched as the kubelet matches
//! images. A leaf module, so that reading a configuration and routing
//! registries to instances can both use it.

use credhost_plugin_api::rules::registry_host;

use crate::{Error, Result};

/// Checks a `[registries]` key: `host[:port]`, or `*.suffix` (one `*.`
/// per label it stands for: `*.*.suffix`).
pub fn check_pattern(pattern: &str) -> std::result::Result<(), String> {
    let mut host = pattern;
    while let Some(rest) = host.strip_prefix("*.") {
        host = rest;
    }
    if host.starts_with('*') {
        return Err("a wildcard is `*.` followed by a domain, e.g. `*.example.com`".into());
    }
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

/// Whether `host` matches the wildcard `pattern` as the kubelet matches
/// (`URLsMatch`): as many labels, each `*` any one label, equal ports.
pub(crate) fn wildcard_matches(pattern: &str, host: &str) -> bool {
    crate::kubelet::urls_match(pattern, host)
}

/// Whether `host` matched the wildcard `pattern` by the rule before the
/// kubelet's (a `*.suffix` matched any host ending in `.suffix`, at any
/// depth): what a configuration's wildcard no longer matches is warned
/// about, for one release.
pub(crate) fn matched_at_any_depth(pattern: &str, host: &str) -> bool {
    let suffix = pattern.trim_start_matches("*.");
    host.len() > suffix.len() + 1 && host.ends_with(suffix) && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
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
