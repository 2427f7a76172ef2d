//! `plugins.toml`: which platform is active, where plugin files are, and each
//! plugin's settings.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{Error, Result};

/// The environment variable that overrides `platform`.
pub const PLATFORM_ENV: &str = "CREDHOST_PLATFORM";
/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "CREDHOST_CONFIG";

/// A parsed configuration file.
#[derive(Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The active platform (after the environment override).
    pub platform: String,
    /// Where the platform came from, for messages.
    pub platform_source: String,
    /// The directory to find plugin files in.
    pub plugin_dir: PathBuf,
    /// Plugin instances by name (`[plugins.NAME]`), sorted by name.
    pub instances: BTreeMap<String, Instance>,
    /// `[registries]`: registry host (`host[:port]`, lower case) or wildcard
    /// (`*.suffix`) to the name of the instance whose credentials it accepts.
    pub registries: BTreeMap<String, String>,
    /// `[credential_helper]`: how `docker-credential-credhost` behaves.
    pub credential_helper: HelperSettings,
    /// `allow_insecure_permissions`: load plugin files that fail the
    /// ownership and permission checks (development only; warned about on
    /// every load).
    pub allow_insecure_permissions: bool,
    /// `[audit]`: the issuance audit log, when there is one.
    pub audit: Option<crate::audit::AuditSettings>,
    /// `plugin_download_max_mib`: the largest plugin file `plugins install`
    /// (and `auto_install`) fetches, in bytes; 512 MiB by default.
    pub plugin_download_max: u64,
    text: String,
}

/// The `[credential_helper]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelperSettings {
    /// Keep registry credentials in files between helper runs (off by default).
    pub cache: bool,
    /// Where (resolved against the file's directory); the user cache directory when `None`.
    pub cache_dir: Option<PathBuf>,
}

/// One `[plugins.NAME]` table: an instance of a plugin, with its own settings.
#[derive(Clone)]
pub struct Instance {
    /// The instance name (what `platform`, `--platform` and `[registries]` name).
    pub name: String,
    /// `plugin`: the plugin it runs; the instance name when not given.
    pub plugin: String,
    /// `file`: a path, or a bare library name resolved in the plugin directory.
    pub file: Option<String>,
    /// `sha256`: the expected digest of the file, checked before loading.
    pub sha256: Option<String>,
    /// `registries`: registry hosts this instance serves, besides the one its
    /// plugin declares through its settings.
    pub registries: Vec<String>,
    /// `identity_env`: environment variables its credentials depend on,
    /// besides those its plugin declares (for the credential helper's cache).
    pub identity_env: Vec<String>,
    /// `timeout` and `transfer_idle_timeout`: how long its calls may take.
    pub limits: Limits,
    /// `isolation`: where the plugin runs.
    pub isolation: Isolation,
    /// `env`: with process isolation, the environment variables the child
    /// sees (names, or `PREFIX*`); `None`: the host's whole environment.
    pub env: Option<Vec<String>>,
    /// `process_idle_timeout`: with process isolation, how long a child
    /// may go without a call before it is stopped (started again on the
    /// next one); default 300 s.
    pub process_idle_timeout: std::time::Duration,
    /// `process_memory_limit_mib`: with process isolation, the most memory
    /// the child may allocate (`RLIMIT_DATA`); none by default. A plugin
    /// past it fails its allocation, which ends its process, not the host.
    pub process_memory_limit: Option<u64>,
    /// `create_only = "best-effort"`: on a store that ignores create-only
    /// preconditions, `--if-absent` looks for the name, then writes (racy)
    /// instead of failing.
    pub create_only_best_effort: bool,
    /// `oci`: the artifact the plugin file was installed from,
    /// `REGISTRY/REPOSITORY@sha256:DIGEST` (`credhost plugins install`).
    pub oci: Option<String>,
    /// `auto_install`: fetch the file from `oci` when it is missing (off
    /// by default).
    pub auto_install: bool,
    /// `settings`: handed to the plugin as JSON; the host never reads them,
    /// except at the path the plugin itself declares for its registry.
    pub settings: toml::Table,
}

/// Where an instance's plugin runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// `"in-process"` (the default): loaded into this process; fast, panics
    /// and deadlines contained.
    #[default]
    InProcess,
    /// `"process"`: in a child process of its own, so that even `abort()`,
    /// a crash or `exit()` in the plugin costs one request.
    Process,
}

impl Instance {
    /// The value at a dotted `path` of the instance's settings (`registry.url`),
    /// as a plugin declares it: the one way the host reads inside settings.
    pub fn setting(&self, path: &str) -> Option<&toml::Value> {
        let mut parts = path.split('.');
        let mut value = self.settings.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }
}

/// How long an instance's calls may take before the host gives up on them
/// (and cancels them in the plugin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `timeout`: constructing the provider, and each registry-credentials,
    /// build-job-credentials and check call (default 60 s).
    pub call: std::time::Duration,
    /// `transfer_idle_timeout`: how long an upload or download may report no
    /// progress (default 300 s). Transfers have no total limit.
    pub transfer_idle: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { call: std::time::Duration::from_secs(60), transfer_idle: std::time::Duration::from_secs(300) }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawConfig {
    platform: Option<String>,
    plugin_dir: Option<String>,
    #[serde(default)]
    plugins: BTreeMap<String, RawPlugin>,
    #[serde(default)]
    registries: BTreeMap<String, String>,
    credential_helper: Option<RawHelper>,
    #[serde(default)]
    allow_insecure_permissions: bool,
    audit: Option<RawAudit>,
    plugin_download_max_mib: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawAudit {
    path: String,
    key_env: String,
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHelper {
    #[serde(default)]
    cache: bool,
    cache_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPlugin {
    plugin: Option<String>,
    file: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    registries: Vec<String>,
    #[serde(default)]
    identity_env: Vec<String>,
    timeout: Option<u64>,
    transfer_idle_timeout: Option<u64>,
    isolation: Option<String>,
    env: Option<Vec<String>>,
    process_idle_timeout: Option<u64>,
    process_memory_limit_mib: Option<u64>,
    create_only: Option<String>,
    oci: Option<String>,
    #[serde(default)]
    auto_install: bool,
    #[serde(default)]
    settings: toml::Table,
}

/// The largest configuration file read: a configuration is a few KiB, and
/// anything much larger is a mistake (or an attempt to exhaust memory).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Config {
    /// Reads and validates `path`; `platform_override` (e.g. `--platform`)
    /// wins over `CREDHOST_PLATFORM`, which wins over the file.
    pub fn load(path: &Path, platform_override: Option<&str>) -> Result<Self> {
        let text = read_text(path)?;
        Self::from_text(path, &text, platform_override)
    }

    /// Parses `text` read from `path`, with the same overrides as [`Config::load`].
    pub fn from_text(path: &Path, text: &str, platform_override: Option<&str>) -> Result<Self> {
        let env = std::env::var(PLATFORM_ENV).ok().filter(|v| !v.is_empty());
        Self::parse(path, text, platform_override, env.as_deref())
    }

    /// Parses configuration text as if read from `path`.
    pub fn parse(path: &Path, text: &str, platform_override: Option<&str>, platform_env: Option<&str>) -> Result<Self> {
        let file = path.display().to_string();
        let raw = parse_raw(&file, text)?;
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let at = |keys: &[&str]| locate(&file, text, keys);

        let mut instances = BTreeMap::new();
        for (name, p) in raw.plugins {
            let plugin = p.plugin.unwrap_or_else(|| name.clone());
            let mut limits = Limits::default();
            for (key, value, slot) in [
                ("timeout", p.timeout, &mut limits.call),
                ("transfer_idle_timeout", p.transfer_idle_timeout, &mut limits.transfer_idle),
            ] {
                match value {
                    None => {}
                    Some(secs @ 1..=86_400) => *slot = std::time::Duration::from_secs(secs),
                    Some(_) => {
                        return Err(Error::Config {
                            location: at(&["plugins", &name, key]),
                            message: format!("plugins.{name}.{key} must be between 1 and 86400 seconds"),
                        })
                    }
                }
            }
            let isolation = match p.isolation.as_deref() {
                None | Some("in-process") => Isolation::InProcess,
                Some("process") => Isolation::Process,
                Some(other) => {
                    return Err(Error::Config {
                        location: at(&["plugins", &name, "isolation"]),
                        message: format!(
                            "plugins.{name}.isolation is `{}`: use \"in-process\" or \"process\"",
                            other.escape_debug()
                        ),
                    })
                }
            };
            for (key, set) in [
                ("env", p.env.is_some()),
                ("process_idle_timeout", p.process_idle_timeout.is_some()),
                ("process_memory_limit_mib", p.process_memory_limit_mib.is_some()),
            ] {
                if set && isolation != Isolation::Process {
                    return Err(Error::Config {
                        location: at(&["plugins", &name, key]),
                        message: format!(
                            "plugins.{name}.{key} is about a plugin process: it needs isolation = \"process\""
                        ),
                    });
                }
            }
            let process_idle_timeout = match p.process_idle_timeout {
                None => std::time::Duration::from_secs(300),
                Some(secs @ 1..=86_400) => std::time::Duration::from_secs(secs),
                Some(_) => {
                    return Err(Error::Config {
                        location: at(&["plugins", &name, "process_idle_timeout"]),
                        message: format!("plugins.{name}.process_idle_timeout must be between 1 and 86400 seconds"),
                    })
                }
            };
            let process_memory_limit = match p.process_memory_limit_mib {
                None => None,
                Some(mib @ 64..=1_048_576) => Some(mib << 20),
                Some(_) => {
                    return Err(Error::Config {
                        location: at(&["plugins", &name, "process_memory_limit_mib"]),
                        message: format!(
                            "plugins.{name}.process_memory_limit_mib must be between 64 and 1048576 (MiB)"
                        ),
                    })
                }
            };
            let create_only_best_effort = match p.create_only.as_deref() {
                None | Some("enforced") => false,
                Some("best-effort") => true,
                Some(other) => {
                    return Err(Error::Config {
                        location: at(&["plugins", &name, "create_only"]),
                        message: format!(
                            "plugins.{name}.create_only is `{}`: use \"enforced\" (the default) or \"best-effort\"",
                            other.escape_debug()
                        ),
                    })
                }
            };
            let instance = Instance {
                name: name.clone(),
                plugin,
                file: p.file,
                sha256: p.sha256,
                registries: p.registries,
                identity_env: p.identity_env,
                isolation,
                env: p.env,
                process_idle_timeout,
                process_memory_limit,
                create_only_best_effort,
                oci: p.oci,
                auto_install: p.auto_install,
                limits,
                settings: p.settings,
            };
            check_instance(&instance, &at)?;
            instances.insert(name, instance);
        }
        let (platform, platform_source) = match (platform_override, platform_env, raw.platform) {
            (Some(p), _, _) => (p.to_owned(), "the platform asked for".to_owned()),
            (None, Some(p), _) => (p.to_owned(), PLATFORM_ENV.to_owned()),
            (None, None, Some(p)) => (p, at(&["platform"])),
            (None, None, None) if instances.len() == 1 => {
                (instances.keys().next().cloned().unwrap_or_default(), file.clone())
            }
            (None, None, None) => {
                return Err(Error::Config {
                    location: file,
                    message: format!("no `platform` set (and {PLATFORM_ENV} is not set)"),
                })
            }
        };
        if !instances.contains_key(&platform) {
            let known: Vec<&str> = instances.keys().map(String::as_str).collect();
            return Err(Error::Config {
                location: platform_source.clone(),
                message: format!(
                    "unknown platform `{}`; known platforms: {}",
                    platform.escape_debug(),
                    if known.is_empty() { "none (no [plugins.NAME] tables)".to_owned() } else { known.join(", ") }
                ),
            });
        }
        let registries = parse_registries(raw.registries, &instances, &at)?;
        let credential_helper = match raw.credential_helper {
            None => HelperSettings::default(),
            Some(h) => {
                if h.cache_dir.as_deref().is_some_and(|d| d.trim().is_empty()) {
                    return Err(Error::Config {
                        location: at(&["credential_helper", "cache_dir"]),
                        message: "credential_helper.cache_dir is empty".into(),
                    });
                }
                HelperSettings { cache: h.cache, cache_dir: h.cache_dir.map(|d| base_dir.join(d)) }
            }
        };
        let audit = match raw.audit {
            None => None,
            Some(a) => {
                let bad =
                    |key: &str, message: &str| Error::Config { location: at(&["audit", key]), message: message.into() };
                if a.path.trim().is_empty() {
                    return Err(bad("path", "audit.path is empty (a file, or \"-\" for stderr)"));
                }
                if a.key_env.is_empty() || a.key_env.contains(['=', '\0']) {
                    return Err(bad("key_env", "audit.key_env must name an environment variable"));
                }
                let path = match a.path.as_str() {
                    "-" => crate::audit::AuditPath::Stderr,
                    p => crate::audit::AuditPath::File(base_dir.join(p)),
                };
                Some(crate::audit::AuditSettings { path, key_env: a.key_env, required: a.required })
            }
        };
        let plugin_dir = base_dir.join(raw.plugin_dir.as_deref().unwrap_or("."));
        let plugin_download_max = match raw.plugin_download_max_mib {
            None => crate::oci::DEFAULT_MAX_DOWNLOAD_MIB << 20,
            Some(mib @ 1..=65_536) => mib << 20,
            Some(_) => {
                return Err(Error::Config {
                    location: at(&["plugin_download_max_mib"]),
                    message: "plugin_download_max_mib must be between 1 and 65536 (MiB)".into(),
                })
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            base_dir,
            platform,
            platform_source,
            plugin_dir,
            instances,
            registries,
            credential_helper,
            allow_insecure_permissions: raw.allow_insecure_permissions,
            audit,
            plugin_download_max,
            text: text.to_owned(),
        })
    }

    /// `file:line` of a key path inside the file (`["plugins", "local", "settings", "storage", "kind"]`),
    /// falling back to the nearest enclosing key that exists.
    pub fn locate(&self, keys: &[&str]) -> String {
        locate(&self.path.display().to_string(), &self.text, keys)
    }

    /// The instance `name`.
    pub fn instance(&self, name: &str) -> Result<&Instance> {
        self.instances.get(name).ok_or_else(|| Error::Config {
            location: self.path.display().to_string(),
            message: format!("no [plugins.{name}] table"),
        })
    }

    /// The active instance.
    pub fn active(&self) -> Result<&Instance> {
        self.instance(&self.platform)
    }

    /// The settings of instance `name` as JSON, for the plugin's constructor.
    pub fn settings_json(&self, name: &str) -> String {
        let table = self.instances.get(name).map(|p| p.settings.clone()).unwrap_or_default();
        serde_json::to_string(&table).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Parses the file's text into its tables. An error names the line and,
/// when it is about a value, the key path (`registries."a.example"`).
fn parse_raw(file: &str, text: &str) -> Result<RawConfig> {
    let located = |e: &toml::de::Error, key: &str| {
        let location = match e.span() {
            Some(span) => format!("{file}:{}", line_of(text, span.start)),
            None => file.to_owned(),
        };
        let mut message = e.message().trim().replace('\n', " ");
        if message == "duplicate key" {
            let spanned = e.span().and_then(|span| text.get(span)).map(str::trim).unwrap_or("");
            if !spanned.is_empty() && spanned.len() <= 200 && !spanned.contains(char::is_control) {
                message = format!("duplicate key `{spanned}`");
            }
        }
        let message = if key.is_empty() { message } else { format!("{key}: {message}") };
        // Keys and values quoted from the file may hold control characters
        // (`"W\r" = 1`): escaped, so that the error stays one line.
        let message = message.chars().fold(String::with_capacity(message.len()), |mut out, c| {
            if c.is_control() {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
            out
        });
        Error::Config { location, message }
    };
    let de = toml::de::Deserializer::parse(text).map_err(|e| located(&e, ""))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // An unknown key is named by the message; the path then ends with it.
        let key = match inner.message().starts_with("unknown field") {
            true => path.rsplit_once('.').map(|(parent, _)| parent.to_owned()).unwrap_or_default(),
            false if path == "." || path == "?" => String::new(),
            false => path,
        };
        located(&inner, &key)
    })
}

/// Reads a configuration file: a regular file (a FIFO or device would
/// block or never end), opened without blocking, at most [`MAX_CONFIG_BYTES`].
pub fn read_text(path: &Path) -> Result<String> {
    let fail = |message: String| Error::Config { location: path.display().to_string(), message };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = match options.open(path) {
        Ok(file) => file,
        // A socket cannot be opened at all (ENXIO).
        Err(_) if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) => {
            return Err(fail("the configuration is not a regular file".into()))
        }
        Err(e) => return Err(fail(format!("cannot read the configuration: {e}"))),
    };
    let meta = file.metadata().map_err(|e| fail(format!("cannot read the configuration: {e}")))?;
    if !meta.is_file() {
        return Err(fail("the configuration is not a regular file".into()));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(fail(format!("the configuration is {} bytes; the limit is {MAX_CONFIG_BYTES}", meta.len())));
    }
    let mut text = String::new();
    use std::io::Read as _;
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read the configuration: {e}")))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!("the configuration is over {MAX_CONFIG_BYTES} bytes")));
    }
    Ok(text)
}

/// Checks one instance table: names, pin, file, host-owned keys.
fn check_instance(instance: &Instance, at: &dyn Fn(&[&str]) -> String) -> Result<()> {
    let name = &instance.name;
    if !valid_plugin_name(name) {
        return Err(Error::Config {
            location: at(&["plugins", name]),
            message: format!(
                "invalid instance name `{}`: use lower-case letters, digits, `-` and `_`",
                name.escape_debug()
            ),
        });
    }
    if !valid_plugin_name(&instance.plugin) {
        return Err(Error::Config {
            location: at(&["plugins", name, "plugin"]),
            message: format!(
                "plugins.{name}.plugin: invalid plugin name `{}`: use lower-case letters, digits, `-` and `_`",
                instance.plugin.escape_debug()
            ),
        });
    }
    if let Some(pin) = &instance.sha256 {
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Config {
                location: at(&["plugins", name, "sha256"]),
                message: format!("plugins.{name}.sha256 must be 64 hexadecimal digits"),
            });
        }
    }
    if let Some(oci) = &instance.oci {
        let pinned = crate::oci::ArtifactRef::parse(oci).map_err(|e| Error::Config {
            location: at(&["plugins", name, "oci"]),
            message: format!("plugins.{name}.oci: {e}"),
        })?;
        if pinned.digest().is_none() {
            return Err(Error::Config {
                location: at(&["plugins", name, "oci"]),
                message: format!(
                    "plugins.{name}.oci names no digest: pin it, REGISTRY/REPOSITORY@sha256:DIGEST (`credhost plugins install` prints it)"
                ),
            });
        }
    }
    if instance.auto_install && instance.oci.is_none() {
        return Err(Error::Config {
            location: at(&["plugins", name, "auto_install"]),
            message: format!("plugins.{name}.auto_install needs plugins.{name}.oci (where to fetch the file from)"),
        });
    }
    if instance.file.as_deref() == Some("") {
        return Err(Error::Config {
            location: at(&["plugins", name, "file"]),
            message: format!("plugins.{name}.file is empty"),
        });
    }
    for host in &instance.registries {
        if let Err(why) = crate::patterns::check_pattern(host) {
            return Err(Error::Config {
                location: at(&["plugins", name, "registries"]),
                message: format!("plugins.{name}.registries: invalid registry `{}`: {why}", host.escape_debug()),
            });
        }
    }
    for (key, vars) in [("env", instance.env.as_deref().unwrap_or_default()), ("identity_env", &instance.identity_env)]
    {
        for var in vars {
            let base = var.strip_suffix('*').unwrap_or(var);
            if base.is_empty() || !base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(Error::Config {
                    location: at(&["plugins", name, key]),
                    message: format!(
                        "plugins.{name}.{key}: `{}` is not an environment variable name (or `PREFIX*`)",
                        var.escape_debug()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Checks the `[registries]` table: each key a registry host or `*.suffix`
/// wildcard, each value a configured instance. Keys are compared in lower case.
fn parse_registries(
    raw: BTreeMap<String, String>,
    plugins: &BTreeMap<String, Instance>,
    at: &dyn Fn(&[&str]) -> String,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (key, plugin) in raw {
        let location = at(&["registries", &key]);
        if let Err(why) = crate::patterns::check_pattern(&key) {
            let message = format!("registries: invalid registry `{}`: {why}", key.escape_debug());
            return Err(Error::Config { location, message });
        }
        if !plugins.contains_key(&plugin) {
            let known: Vec<&str> = plugins.keys().map(String::as_str).collect();
            return Err(Error::Config {
                location,
                message: format!(
                    "registries: `{key}` names unknown instance `{}`; known instances: {}",
                    plugin.escape_debug(),
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            });
        }
        let normal = key.to_ascii_lowercase();
        if out.insert(normal.clone(), plugin).is_some() {
            return Err(Error::Config {
                location,
                message: format!("registries: `{normal}` is listed twice (case does not matter)"),
            });
        }
    }
    Ok(out)
}

pub(crate) fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn locate(file: &str, text: &str, keys: &[&str]) -> String {
    match span_of(text, keys) {
        Some(offset) => format!("{file}:{}", line_of(text, offset)),
        None => file.to_owned(),
    }
}

/// Finds the byte offset where the deepest existing key of `keys` is defined.
fn span_of(text: &str, keys: &[&str]) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    for key in keys {
        let Some((k, v)) = table.get_key_value(*key) else { break };
        found = Some(k.span().start);
        match v.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"platform = "local"
plugin_dir = "target/release"

[plugins.local]
[plugins.local.settings]
registry = { url = "http://127.0.0.1:5000", auth = "none" }
storage = { kind = "fs", root = ".credhost/storage", bucket = "projects" }

[plugins.aws.settings]
region = "us-east-2"
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("dir/plugins.toml"), text, None, None)
    }

    #[test]
    fn parses_the_default_shape() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.platform, "local");
        assert_eq!(c.plugin_dir, Path::new("dir/target/release"));
        assert_eq!(c.instances.len(), 2);
        let json: serde_json::Value = serde_json::from_str(&c.settings_json("local")).unwrap();
        assert_eq!(json["storage"]["kind"], "fs");
    }

    #[test]
    fn overrides_win_in_order() {
        let c = Config::parse(Path::new("p.toml"), GOOD, None, Some("aws")).unwrap();
        assert_eq!((c.platform.as_str(), c.platform_source.as_str()), ("aws", PLATFORM_ENV));
        let c = Config::parse(Path::new("p.toml"), GOOD, Some("local"), Some("aws")).unwrap();
        assert_eq!(c.platform, "local");
    }

    #[test]
    fn unknown_platform_lists_known_ones() {
        let e = Config::parse(Path::new("p.toml"), GOOD, None, Some("gpc")).err().unwrap().to_string();
        assert_eq!(e, "CREDHOST_PLATFORM: unknown platform `gpc`; known platforms: aws, local");
        let e = parse(&GOOD.replace("platform = \"local\"", "platform = \"nope\"")).err().unwrap().to_string();
        assert!(e.starts_with("dir/plugins.toml:1: unknown platform `nope`"), "{e}");
    }

    #[test]
    fn unknown_keys_name_file_and_line() {
        let e = parse(&GOOD.replace("plugin_dir", "plugins_dir")).err().unwrap().to_string();
        assert!(e.starts_with("dir/plugins.toml:2: unknown field `plugins_dir`"), "{e}");
        let e = parse("[plugins.local]\nfiel = \"x\"\n").err().unwrap().to_string();
        assert!(e.starts_with("dir/plugins.toml:2: plugins.local: unknown field `fiel`"), "{e}");
        let e = parse(&format!("{GOOD}[registries]\n\"a.example\" = 3\n")).err().unwrap().to_string();
        assert!(e.starts_with("dir/plugins.toml:12: registries.a.example: invalid type: integer `3`"), "{e}");
        let e = parse(&format!("{GOOD}[plugins.aws]\ntimeout = \"5\"\n")).err().unwrap().to_string();
        assert!(e.starts_with("dir/plugins.toml:12: plugins.aws.timeout: invalid type: string"), "{e}");
        let e = parse("platform = \"a\"\nplatform = \"b\"\n").err().unwrap().to_string();
        assert_eq!(e, "dir/plugins.toml:2: duplicate key `platform`");
        let e = parse("platform = \n").err().unwrap().to_string();
        assert!(e.starts_with("dir/plugins.toml:1:"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn locates_plugin_keys() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.locate(&["plugins", "local", "settings", "storage", "kind"]), "dir/plugins.toml:7");
        assert_eq!(c.locate(&["plugins", "aws", "settings", "region"]), "dir/plugins.toml:10");
        assert_eq!(c.locate(&["plugins", "aws", "settings", "nope"]), "dir/plugins.toml:9");
    }

    #[test]
    fn credential_helper_table() {
        assert_eq!(parse(GOOD).unwrap().credential_helper, HelperSettings::default());
        let c = parse(&format!("{GOOD}[credential_helper]\ncache = true\ncache_dir = \"cache\"\n")).unwrap();
        assert_eq!(c.credential_helper, HelperSettings { cache: true, cache_dir: Some(PathBuf::from("dir/cache")) });
        let e = parse(&format!("{GOOD}[credential_helper]\ncache = \"yes\"\n")).err().unwrap().to_string();
        assert!(e.starts_with("dir/plugins.toml:12:"), "{e}");
        let e = parse(&format!("{GOOD}[credential_helper]\ncache_dir = \"\"\n")).err().unwrap().to_string();
        assert_eq!(e, "dir/plugins.toml:12: credential_helper.cache_dir is empty");
    }

    #[test]
    fn audit_table() {
        use crate::audit::{AuditPath, AuditSettings};
        assert_eq!(parse(GOOD).unwrap().audit, None);
        let c = parse(&format!("{GOOD}[audit]\npath = \"audit.log\"\nkey_env = \"K\"\n")).unwrap();
        let file = AuditPath::File(PathBuf::from("dir/audit.log"));
        assert_eq!(c.audit, Some(AuditSettings { path: file, key_env: "K".into(), required: false }));
        let c = parse(&format!("{GOOD}[audit]\npath = \"-\"\nkey_env = \"K\"\nrequired = true\n")).unwrap();
        assert_eq!(c.audit, Some(AuditSettings { path: AuditPath::Stderr, key_env: "K".into(), required: true }));
        for (body, want) in [
            ("path = \"\"\nkey_env = \"K\"", "dir/plugins.toml:12: audit.path is empty"),
            ("path = \"a\"\nkey_env = \"\"", "dir/plugins.toml:13: audit.key_env must name"),
            ("path = \"a\"", "dir/plugins.toml:11:"),
            ("path = \"a\"\nkey_env = \"K\"\ncolour = 1", "dir/plugins.toml:1"),
        ] {
            let e = parse(&format!("{GOOD}[audit]\n{body}\n")).err().unwrap().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn bad_pins_are_config_errors() {
        let e =
            parse(&GOOD.replace("[plugins.local]\n", "[plugins.local]\nsha256 = \"abc\"\n")).err().unwrap().to_string();
        assert_eq!(e, "dir/plugins.toml:5: plugins.local.sha256 must be 64 hexadecimal digits");
    }
}
