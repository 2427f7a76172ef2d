//! Which plugin instance serves which container registry.
//!
//! Three sources, so that one credential helper can serve several
//! platforms' registries at once:
//! - the registry each instance's plugin declares (through the interface, as
//!   the setting that names it), and the `registries` an instance table lists;
//! - the `[registries]` table of `plugins.toml`, mapping further hosts
//!   (exactly, or by a `*.suffix` wildcard) to an instance whose credentials
//!   they accept.

use std::collections::BTreeMap;

use credhost_plugin_api::rules::registry_host;

use crate::{
    config::Config,
    patterns::{matched_at_any_depth, wildcard_matches},
    Error, ErrorKind, PluginInfo, Result,
};

/// How a registry host reached its instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// An exact `[registries]` entry.
    Table,
    /// The instance itself: its plugin's declared registry setting, or its
    /// `registries` list.
    Instance,
    /// A `[registries]` wildcard (the pattern, e.g. `*.example.com`).
    Wildcard(String),
}

/// The instance that serves a registry host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The instance name.
    pub instance: String,
    /// Why this instance.
    pub via: Via,
}

/// An instance whose plugin could not be loaded.
#[derive(Clone, Debug)]
struct Unloaded {
    kind: ErrorKind,
    why: String,
    /// The registry its settings seem to name (`settings.registry`, a host
    /// or a table with a `url`), when they name one that way.
    guess: Option<String>,
}

/// Registry hosts and the instances serving them.
#[derive(Clone, Debug, Default)]
pub struct RegistryMap {
    exact: BTreeMap<String, Route>,
    /// `(pattern, instance)`, longest pattern first.
    wildcards: Vec<(String, String)>,
    /// Instances whose plugin could not be loaded: the registries they
    /// declare are unknown.
    unloaded: BTreeMap<String, Unloaded>,
    /// What each loaded instance's plugin said about itself.
    infos: BTreeMap<String, PluginInfo>,
}

impl RegistryMap {
    /// Builds the map of `config`, given what each instance's plugin declares
    /// (`infos`, by instance name; an instance whose plugin could not be
    /// loaded is simply absent). Two instances serving the same host are an
    /// error unless a `[registries]` entry picks one.
    pub fn new(config: &Config, infos: &BTreeMap<String, PluginInfo>) -> Result<Self> {
        let mut exact: BTreeMap<String, Route> = BTreeMap::new();
        let mut wildcards = Vec::new();
        for (pattern, instance) in &config.registries {
            if pattern.starts_with('*') {
                wildcards.push((pattern.clone(), instance.clone()));
            } else {
                exact.insert(pattern.clone(), Route { instance: instance.clone(), via: Via::Table });
            }
        }
        for (name, instance) in &config.instances {
            let mut hosts: Vec<(String, Vec<String>)> = instance
                .registries
                .iter()
                .map(|h| (registry_host(h), vec!["plugins".to_owned(), name.clone(), "registries".to_owned()]))
                .collect();
            if let Some((host, key)) = declared_registry(config, name, infos.get(name), true) {
                hosts.push((host, key));
            }
            for (host, key) in hosts {
                match exact.get(&host) {
                    Some(Route { via: Via::Table, .. }) => {}
                    Some(Route { instance: other, .. }) if other == name => {}
                    Some(Route { instance: other, .. }) => {
                        let key: Vec<&str> = key.iter().map(String::as_str).collect();
                        return Err(Error::Config {
                            location: config.locate(&key),
                            message: format!(
                                "registry {host} is served by instances `{other}` and `{name}`; add `\"{host}\" = \"{name}\"` (or `{other}`) to [registries] to choose"
                            ),
                        });
                    }
                    None => {
                        exact.insert(host, Route { instance: name.clone(), via: Via::Instance });
                    }
                }
            }
        }
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Self { exact, wildcards, unloaded: BTreeMap::new(), infos: infos.clone() })
    }

    /// Records the instances of `config` whose plugin could not be loaded,
    /// and why.
    pub fn with_unloaded(mut self, config: &Config, failed: BTreeMap<String, Error>) -> Self {
        self.unloaded = failed
            .into_iter()
            .map(|(name, e)| {
                let guess = config.instances.get(&name).and_then(legacy_registry);
                (name, Unloaded { kind: e.kind(), why: crate::one_line(&e.to_string()), guess })
            })
            .collect();
        self
    }

    /// What instance `name`'s plugin said about itself, when it loaded.
    pub fn info(&self, name: &str) -> Option<&PluginInfo> {
        self.infos.get(name)
    }

    /// The instances whose plugin could not be loaded and that may serve
    /// `host`, which no loaded instance serves: those whose settings name it
    /// (`settings.registry`) and those whose settings name no registry that
    /// way (nothing is known of them), with the error's kind and text.
    pub fn may_serve(&self, host: &str) -> Vec<(&str, ErrorKind, &str)> {
        self.unloaded
            .iter()
            .filter(|(_, u)| u.guess.as_deref().is_none_or(|g| g == host))
            .map(|(name, u)| (name.as_str(), u.kind, u.why.as_str()))
            .collect()
    }

    /// The instance serving `server` (a host, or a URL as Docker passes it):
    /// an exact `[registries]` entry, else an instance's own registry, else
    /// the longest matching wildcard.
    pub fn resolve(&self, server: &str) -> Option<Route> {
        let host = registry_host(server);
        if host.is_empty() {
            return None;
        }
        if let Some(route) = self.exact.get(&host) {
            return Some(route.clone());
        }
        let found = self
            .wildcards
            .iter()
            .find(|(pattern, _)| wildcard_matches(pattern, &host))
            .map(|(pattern, instance)| Route { instance: instance.clone(), via: Via::Wildcard(pattern.clone()) });
        if found.is_none() {
            if let Some((pattern, _)) = self.wildcards.iter().find(|(p, _)| matched_at_any_depth(p, &host)) {
                let extra = host.split('.').count() - pattern.split('.').count();
                tracing::warn!(
                    target: "credhost::registries",
                    "the wildcard `{pattern}` no longer matches {host}: wildcards match as the kubelet does, one label per `*.`; add `\"{}{}\"` to [registries] to keep it",
                    "*.".repeat(extra),
                    pattern
                );
            }
        }
        found
    }

    /// Every exactly known host and its route, sorted by host.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &Route)> {
        self.exact.iter().map(|(h, r)| (h.as_str(), r))
    }

    /// The wildcard patterns (`*.suffix`), which no host list can spell out.
    pub fn wildcard_patterns(&self) -> impl Iterator<Item = &str> {
        self.wildcards.iter().map(|(p, _)| p.as_str())
    }
}

/// The registries one instance serves, as its provider needs to know them
/// to word its requests: a plugin knows only the registry its own settings
/// name, so a request for a host the configuration maps to the instance asks
/// for the instance's own registry instead.
#[derive(Clone, Debug, Default)]
pub(crate) struct Served {
    /// The host the plugin's declared setting names.
    own: Option<String>,
    /// Hosts the configuration maps to the instance: its `registries` list
    /// and the exact `[registries]` entries naming it.
    mapped: Vec<String>,
    /// The `[registries]` wildcards naming it.
    wildcards: Vec<String>,
}

impl Served {
    /// What instance `name` of `config` serves, given its plugin's `info`.
    pub(crate) fn new(config: &Config, name: &str, info: Option<&PluginInfo>) -> Self {
        let own = declared_registry(config, name, info, false).map(|(host, _)| host);
        let mut mapped: Vec<String> = config
            .instances
            .get(name)
            .map(|i| i.registries.iter().map(|h| registry_host(h)).collect())
            .unwrap_or_default();
        let mut wildcards = Vec::new();
        for (pattern, instance) in &config.registries {
            if instance != name {
                continue;
            }
            if pattern.starts_with('*') {
                wildcards.push(pattern.clone());
            } else {
                mapped.push(registry_host(pattern));
            }
        }
        Self { own, mapped, wildcards }
    }

    /// The registry a request for `host` names to the plugin: none (the
    /// instance's own registry) for the host the plugin's setting names and
    /// for hosts the configuration maps to the instance, so that they all
    /// share one answer; `host` itself for a host the configuration does not
    /// know, which the plugin may serve or refuse.
    pub(crate) fn request_for(&self, host: &str) -> Option<String> {
        let known = self.own.as_deref() == Some(host)
            || self.mapped.iter().any(|h| h == host)
            || self.wildcards.iter().any(|p| wildcard_matches(p, host));
        (!known).then(|| host.to_owned())
    }
}

/// The registry host instance `name` serves by its plugin's declaration, and
/// the key path of the setting it came from. A plugin that declares nothing
/// (built by an older kit) gets the old reading of its `registry` setting (a
/// host, or a table with a `url`), with a deprecation warning.
/// Where plugins that declared nothing kept their registry: `registry` (a
/// host or URL), or `registry.url`.
fn legacy_registry_path(instance: &crate::config::Instance) -> Option<Vec<String>> {
    match instance.settings.get("registry")? {
        toml::Value::Table(t) => t.get("url").map(|_| vec!["registry".to_owned(), "url".to_owned()]),
        toml::Value::String(_) => Some(vec!["registry".to_owned()]),
        _ => None,
    }
}

/// The registry host at [`legacy_registry_path`], when there is one.
fn legacy_registry(instance: &crate::config::Instance) -> Option<String> {
    let path = legacy_registry_path(instance)?.join(".");
    Some(registry_host(instance.setting(&path)?.as_str()?)).filter(|h| !h.is_empty())
}

/// `warn`: say that the old reading is deprecated (once per map, not for
/// every provider).
fn declared_registry(
    config: &Config,
    name: &str,
    info: Option<&PluginInfo>,
    warn: bool,
) -> Option<(String, Vec<String>)> {
    let instance = config.instances.get(name)?;
    let mut key = vec!["plugins".to_owned(), name.to_owned(), "settings".to_owned()];
    let declared = info.and_then(|i| i.registry_setting.clone());
    let path: Vec<String> = match &declared {
        Some(path) => path.split('.').map(str::to_owned).collect(),
        None if info.is_some() && instance.registries.is_empty() => {
            let url = legacy_registry_path(instance)?;
            if warn {
                tracing::warn!(
                    target: "credhost::registries",
                    "instance `{name}`: its plugin does not declare which setting names its registry; reading `settings.registry` is deprecated and will stop in the next release: rebuild the plugin with the current kit, or list the hosts in `registries = [...]` of [plugins.{name}]"
                );
            }
            url
        }
        None => return None,
    };
    let host = registry_host(instance.setting(&path.join("."))?.as_str()?);
    key.extend(path);
    (!host.is_empty()).then_some((host, key))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use credhost_plugin_api::{keys, Capabilities, Extra};

    use super::*;

    fn info(registry_setting: Option<&str>) -> PluginInfo {
        let info = credhost_plugin_api::PluginInfo {
            name: "p".into(),
            version: "1".into(),
            api_version: "1.0.0".into(),
            capabilities: Capabilities::ALL,
            extra: Extra::new(),
        };
        let info = match registry_setting {
            Some(s) => info.with_extra(keys::REGISTRY_SETTING, s),
            None => info,
        };
        PluginInfo::from_api(&info, "1.1")
    }

    fn map(text: &str) -> Result<RegistryMap> {
        let config = Config::parse(Path::new("p.toml"), text, None, None)?;
        let mut infos = BTreeMap::new();
        infos.insert("local".to_owned(), info(Some("registry.url")));
        infos.insert("aws".to_owned(), info(Some("registry")));
        RegistryMap::new(&config, &infos)
    }

    const TWO: &str = r#"platform = "local"
[plugins.local.settings]
registry = { url = "http://127.0.0.1:5000", auth = "none" }
[plugins.aws.settings]
registry = "123.dkr.ecr.us-east-1.amazonaws.com"
"#;

    #[test]
    fn declared_settings_table_and_wildcards() {
        let m = map(&format!(
            "{TWO}[registries]\n\"127.0.0.1:5001\" = \"aws\"\n\"*.pkg.example\" = \"local\"\n\"*.a.pkg.example\" = \"aws\"\n\"*.*.deep.example\" = \"local\"\n"
        ))
        .unwrap();
        let instance = |h: &str| m.resolve(h).map(|r| r.instance);
        assert_eq!(instance("127.0.0.1:5000").as_deref(), Some("local"));
        assert_eq!(instance("https://123.DKR.ecr.us-east-1.amazonaws.com").as_deref(), Some("aws"));
        assert_eq!(m.resolve("127.0.0.1:5001").unwrap().via, Via::Table);
        assert_eq!(instance("x.pkg.example").as_deref(), Some("local"));
        // The longest suffix wins; a wildcard never matches the bare domain.
        assert_eq!(m.resolve("b.a.pkg.example").unwrap().via, Via::Wildcard("*.a.pkg.example".into()));
        assert_eq!(instance("pkg.example"), None);
        // One label per `*.`, as the kubelet matches.
        assert_eq!(instance("c.b.pkg.example"), None);
        assert_eq!(instance("b.a.deep.example").as_deref(), Some("local"));
        assert_eq!(instance("a.deep.example"), None);
        assert_eq!(instance("127.0.0.1:5002"), None);
        let hosts: Vec<&str> = m.hosts().map(|(h, _)| h).collect();
        assert_eq!(hosts, ["123.dkr.ecr.us-east-1.amazonaws.com", "127.0.0.1:5000", "127.0.0.1:5001"]);
    }

    #[test]
    fn instances_of_one_plugin_serve_their_own_registries() {
        let text = r#"platform = "aws-prod"
[plugins.aws-prod]
plugin = "aws"
[plugins.aws-prod.settings]
registry = "111.dkr.ecr.us-east-1.amazonaws.com"
[plugins.aws-dev]
plugin = "aws"
registries = ["mirror.example:5000"]
[plugins.aws-dev.settings]
registry = "222.dkr.ecr.us-east-1.amazonaws.com"
"#;
        let config = Config::parse(Path::new("p.toml"), text, None, None).unwrap();
        let infos: BTreeMap<String, PluginInfo> =
            ["aws-prod", "aws-dev"].into_iter().map(|n| (n.to_owned(), info(Some("registry")))).collect();
        let m = RegistryMap::new(&config, &infos).unwrap();
        assert_eq!(m.resolve("111.dkr.ecr.us-east-1.amazonaws.com").unwrap().instance, "aws-prod");
        assert_eq!(m.resolve("222.dkr.ecr.us-east-1.amazonaws.com").unwrap().instance, "aws-dev");
        assert_eq!(m.resolve("mirror.example:5000").unwrap().instance, "aws-dev");
    }

    #[test]
    fn undeclared_registries_use_the_old_reading_and_unloaded_plugins_none() {
        let config = Config::parse(Path::new("p.toml"), TWO, None, None).unwrap();
        let mut infos = BTreeMap::new();
        infos.insert("local".to_owned(), info(None));
        let m = RegistryMap::new(&config, &infos).unwrap();
        assert_eq!(m.resolve("127.0.0.1:5000").unwrap().instance, "local");
        // `aws` did not load: its registry is unknown.
        assert_eq!(m.resolve("123.dkr.ecr.us-east-1.amazonaws.com"), None);
    }

    #[test]
    fn a_table_entry_overrides_a_declaration() {
        let text = TWO.replace("123.dkr.ecr.us-east-1.amazonaws.com", "127.0.0.1:5000");
        let e = map(&text).err().unwrap().to_string();
        assert!(e.starts_with("p.toml:3: registry 127.0.0.1:5000 is served by instances `aws` and `local`"), "{e}");
        let m = map(&format!("{text}[registries]\n\"127.0.0.1:5000\" = \"aws\"\n")).unwrap();
        assert_eq!(m.resolve("127.0.0.1:5000").unwrap().instance, "aws");
    }

    #[test]
    fn bad_table_entries_name_file_and_line() {
        let e = map(&format!("{TWO}[registries]\n\"a.example\" = \"gpc\"\n")).err().unwrap().to_string();
        assert_eq!(e, "p.toml:7: registries: `a.example` names unknown instance `gpc`; known instances: aws, local");
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
