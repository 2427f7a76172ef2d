//! Which plugin serves which container registry.
//!
//! Two sources, so that one credential helper can serve several platforms'
//! registries at once: each plugin's own `registry` setting (the host the
//! plugin hands out credentials for), and the optional `[registries]` table of
//! `plugins.toml`, mapping further hosts (exactly, or by a `*.suffix`
//! wildcard) to a plugin whose credentials they accept.

use std::collections::BTreeMap;

use crate::{config::Config, Error, Result};

/// How a registry host reached its plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// An exact `[registries]` entry.
    Table,
    /// The plugin's own `registry` setting.
    Setting,
    /// A `[registries]` wildcard (the pattern, e.g. `*.example.com`).
    Wildcard(String),
}

/// The plugin that serves a registry host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The plugin name.
    pub plugin: String,
    /// Why this plugin.
    pub via: Via,
}

/// Registry hosts and the plugins serving them.
#[derive(Clone, Debug, Default)]
pub struct RegistryMap {
    exact: BTreeMap<String, Route>,
    /// `(".suffix", plugin, "*.suffix")`, longest suffix first.
    wildcards: Vec<(String, String, String)>,
}

impl RegistryMap {
    /// Builds the map of `config`. Two plugins whose `registry` settings name
    /// the same host are an error unless a `[registries]` entry picks one.
    pub fn from_config(config: &Config) -> Result<Self> {
        let mut exact: BTreeMap<String, Route> = BTreeMap::new();
        let mut wildcards = Vec::new();
        for (pattern, plugin) in &config.registries {
            match pattern.strip_prefix('*') {
                Some(suffix) => wildcards.push((suffix.to_owned(), plugin.clone(), pattern.clone())),
                None => {
                    exact.insert(pattern.clone(), Route { plugin: plugin.clone(), via: Via::Table });
                }
            }
        }
        for (name, entry) in &config.plugins {
            let Some(host) = plugin_registry(&entry.settings) else { continue };
            match exact.get(&host) {
                Some(Route { via: Via::Table, .. }) => {}
                Some(Route { plugin: other, .. }) => {
                    return Err(Error::Config {
                        location: config.locate(&["plugins", name, "settings", "registry"]),
                        message: format!(
                            "registry {host} is the registry of plugins `{other}` and `{name}`; add `\"{host}\" = \"{name}\"` (or `{other}`) to [registries] to choose"
                        ),
                    });
                }
                None => {
                    exact.insert(host, Route { plugin: name.clone(), via: Via::Setting });
                }
            }
        }
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Self { exact, wildcards })
    }

    /// The plugin serving `server` (a host, or a URL as Docker passes it):
    /// an exact `[registries]` entry, else a plugin's `registry` setting,
    /// else the longest matching wildcard.
    pub fn resolve(&self, server: &str) -> Option<Route> {
        let host = normalize_host(server);
        if host.is_empty() {
            return None;
        }
        if let Some(route) = self.exact.get(&host) {
            return Some(route.clone());
        }
        self.wildcards
            .iter()
            .find(|(suffix, _, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, plugin, pattern)| Route { plugin: plugin.clone(), via: Via::Wildcard(pattern.clone()) })
    }

    /// Every exactly known host and its route, sorted by host.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &Route)> {
        self.exact.iter().map(|(h, r)| (h.as_str(), r))
    }

    /// The wildcard patterns (`*.suffix`), which no host list can spell out.
    pub fn wildcard_patterns(&self) -> impl Iterator<Item = &str> {
        self.wildcards.iter().map(|(_, _, p)| p.as_str())
    }
}

/// The registry host a plugin's settings name, by the convention the bundled
/// plugins follow: `registry = "HOST"` (aws, gcp) or `registry = { url = "URL" }`
/// (local). Settings stay opaque otherwise.
pub fn plugin_registry(settings: &toml::Table) -> Option<String> {
    let value = settings.get("registry")?;
    let text = match value {
        toml::Value::String(s) => s.as_str(),
        toml::Value::Table(t) => t.get("url")?.as_str()?,
        _ => return None,
    };
    let host = normalize_host(text);
    (!host.is_empty()).then_some(host)
}

/// `host[:port]` of a registry URL or host, lower case: no scheme, path,
/// trailing dot or whitespace (Docker passes `https://index.docker.io/v1/`,
/// skopeo `host:port`).
pub fn normalize_host(server: &str) -> String {
    let s = server.trim();
    let lower = s.to_ascii_lowercase();
    let rest = match lower.find("://") {
        Some(i) => &lower[i + 3..],
        None => lower.as_str(),
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    host.trim_end_matches('.').to_owned()
}

/// Checks a `[registries]` key: `host[:port]`, or `*.suffix`.
pub fn check_pattern(pattern: &str) -> std::result::Result<(), String> {
    let host = match pattern.strip_prefix("*.") {
        Some(rest) => rest,
        None if pattern.starts_with('*') => return Err("a wildcard is `*.` followed by a domain, e.g. `*.example.com`".into()),
        None => pattern,
    };
    if host.is_empty() {
        return Err("it is empty".into());
    }
    if pattern.contains("://") {
        return Err("give the host (and port), not a URL".into());
    }
    if let Some(c) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'))) {
        return Err(format!("`{}` is not allowed in a registry host", c.escape_default()));
    }
    if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err("empty domain label".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn map(text: &str) -> Result<RegistryMap> {
        RegistryMap::from_config(&Config::parse(Path::new("p.toml"), text, None, None)?)
    }

    const TWO: &str = r#"platform = "local"
[plugins.local.settings]
registry = { url = "http://127.0.0.1:5000", auth = "none" }
[plugins.aws.settings]
registry = "123.dkr.ecr.us-east-1.amazonaws.com"
"#;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("https://Index.Docker.io/v1/"), "index.docker.io");
        assert_eq!(normalize_host(" 127.0.0.1:5000\n"), "127.0.0.1:5000");
        assert_eq!(normalize_host("http://reg.example.com./x"), "reg.example.com");
        assert_eq!(normalize_host(""), "");
    }

    #[test]
    fn settings_and_table_and_wildcards() {
        let m = map(&format!(
            "{TWO}[registries]\n\"127.0.0.1:5001\" = \"aws\"\n\"*.pkg.example\" = \"local\"\n\"*.a.pkg.example\" = \"aws\"\n"
        ))
        .unwrap();
        let plugin = |h: &str| m.resolve(h).map(|r| r.plugin);
        assert_eq!(plugin("127.0.0.1:5000").as_deref(), Some("local"));
        assert_eq!(plugin("https://123.DKR.ecr.us-east-1.amazonaws.com").as_deref(), Some("aws"));
        assert_eq!(m.resolve("127.0.0.1:5001").unwrap().via, Via::Table);
        assert_eq!(plugin("x.pkg.example").as_deref(), Some("local"));
        // The longest suffix wins; a wildcard never matches the bare domain.
        assert_eq!(m.resolve("b.a.pkg.example").unwrap().via, Via::Wildcard("*.a.pkg.example".into()));
        assert_eq!(plugin("pkg.example"), None);
        assert_eq!(plugin("127.0.0.1:5002"), None);
        let hosts: Vec<&str> = m.hosts().map(|(h, _)| h).collect();
        assert_eq!(hosts, ["123.dkr.ecr.us-east-1.amazonaws.com", "127.0.0.1:5000", "127.0.0.1:5001"]);
    }

    #[test]
    fn a_table_entry_overrides_a_setting() {
        let text = TWO.replace("123.dkr.ecr.us-east-1.amazonaws.com", "127.0.0.1:5000");
        let e = map(&text).err().unwrap().to_string();
        assert!(e.starts_with("p.toml:3: registry 127.0.0.1:5000 is the registry of plugins `aws` and `local`"), "{e}");
        let m = map(&format!("{text}[registries]\n\"127.0.0.1:5000\" = \"aws\"\n")).unwrap();
        assert_eq!(m.resolve("127.0.0.1:5000").unwrap().plugin, "aws");
    }

    #[test]
    fn bad_table_entries_name_file_and_line() {
        let e = map(&format!("{TWO}[registries]\n\"a.example\" = \"gpc\"\n")).err().unwrap().to_string();
        assert_eq!(e, "p.toml:7: registries: `a.example` names unknown plugin `gpc`; known plugins: aws, local");
        let e = map(&format!("{TWO}[registries]\n\"https://a.example\" = \"aws\"\n")).err().unwrap().to_string();
        assert!(e.starts_with("p.toml:7: registries: invalid registry `https://a.example`"), "{e}");
        let e = map(&format!("{TWO}[registries]\n\"*example.com\" = \"aws\"\n")).err().unwrap().to_string();
        assert!(e.contains("a wildcard is `*.`"), "{e}");
        let e = map(&format!("{TWO}[registries]\n\"a.example\" = 3\n")).err().unwrap().to_string();
        assert!(e.starts_with("p.toml:7:"), "{e}");
        let e = map(&format!("{TWO}[registrys]\n")).err().unwrap().to_string();
        assert!(e.starts_with("p.toml:6: unknown field `registrys`"), "{e}");
    }
}
