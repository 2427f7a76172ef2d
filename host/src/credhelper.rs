//! `docker-credential-credhost`: the docker credential-helper protocol over
//! the configured plugins.
//!
//! Docker, skopeo, buildah and other registry clients run
//! `docker-credential-<NAME> <action>` for the registries a `credHelpers`
//! entry of their config.json sends to `<NAME>`. Actions: `get` (server URL on
//! stdin, `{"ServerURL","Username","Secret"}` on stdout), `list` (a JSON object
//! of server URL to user name), `version`, and `store`/`erase`, which this
//! helper refuses: credentials come from the platform, not from
//! `docker login`. Failures are one line on stdout and exit status 1, as the
//! protocol wants; "credentials not found in native keychain" is the answer
//! clients read as "no credentials, go on anonymously".

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
};

use credhost_plugin_api::RegistryAuth;
use zeroize::Zeroizing;

use crate::{
    config::Config,
    disk_cache::{self, DiskCache},
    registries::{normalize_host, RegistryMap},
    Error, Host, ProviderHandle, Result,
};

/// The helper's name in a `credHelpers` entry (the program is `docker-credential-credhost`).
pub const HELPER_NAME: &str = "credhost";
/// The protocol's "no credentials for this server" answer.
pub const NOT_FOUND: &str = "credentials not found in native keychain";
/// The request option telling plugins that only a user name and password can
/// reach the client (see the local plugin's `AuthForm`).
pub const AUTH_FORM: (&str, &str) = ("auth_form", "basic");

const USAGE: &str = "usage: docker-credential-credhost <get|list|version|store|erase>";
/// Longer input is not a server URL.
const MAX_STDIN: u64 = 64 * 1024;

/// The configuration the helper reads: `$CREDHOST_CONFIG`, else
/// `$XDG_CONFIG_HOME/credhost/plugins.toml` (`~/.config/credhost/plugins.toml`;
/// `%APPDATA%\credhost\plugins.toml` on Windows). Never the current
/// directory: registry clients run helpers wherever the user happens to be,
/// and a `plugins.toml` there would choose which plugin code gets loaded.
pub fn config_path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var(crate::config::CONFIG_ENV) {
        return Some(p);
    }
    let base = if cfg!(windows) {
        var("APPDATA")?
    } else {
        var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?
    };
    Some(base.join("credhost").join("plugins.toml"))
}

/// Registry credentials by registry host, from whichever plugin serves it.
pub struct CredentialHelper {
    host: Host,
    map: RegistryMap,
    cache: Option<DiskCache>,
    providers: tokio::sync::Mutex<BTreeMap<String, ProviderHandle>>,
}

impl CredentialHelper {
    /// A helper over `config`: its registry map, and the on-disk cache when
    /// `[credential_helper] cache = true` (a cache that cannot be used is
    /// reported and skipped: credentials still flow, only slower).
    pub fn new(config: Config) -> Result<Self> {
        let map = RegistryMap::from_config(&config)?;
        let settings = &config.credential_helper;
        let cache = if settings.cache {
            match settings.cache_dir.clone().or_else(disk_cache::default_dir) {
                Some(dir) => match DiskCache::open(&dir) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(target: "credhost::cache", "not caching credentials: {e}");
                        None
                    }
                },
                None => {
                    tracing::warn!(target: "credhost::cache", "not caching credentials: no cache directory (set credential_helper.cache_dir)");
                    None
                }
            }
        } else {
            None
        };
        Ok(Self { host: Host::new(config), map, cache, providers: Default::default() })
    }

    /// The registry map.
    pub fn registries(&self) -> &RegistryMap {
        &self.map
    }

    async fn provider(&self, plugin: &str) -> Result<ProviderHandle> {
        let mut providers = self.providers.lock().await;
        if let Some(p) = providers.get(plugin) {
            return Ok(p.clone());
        }
        let p = self.host.provider(plugin).await?;
        providers.insert(plugin.to_owned(), p.clone());
        Ok(p)
    }

    /// Credentials for `server` (a host or URL): `None` when no plugin serves
    /// it or its registry needs none. The plugin is asked for its registry's
    /// credentials in user-name-and-password form; the answer is presented for
    /// every host mapped to that plugin.
    pub async fn get(&self, server: &str) -> Result<Option<RegistryAuth>> {
        let host = normalize_host(server);
        let Some(route) = self.map.resolve(&host) else {
            tracing::debug!(target: "credhost::helper", server, "no plugin serves this registry");
            return Ok(None);
        };
        let plugin = route.plugin.as_str();
        let cached = self
            .cache
            .as_ref()
            .map(|c| (c, c.file_for(plugin, &host, &disk_cache::identity(self.host.config(), plugin))));
        if let Some((cache, file)) = &cached {
            if let Some(auth) = cache.load(file) {
                tracing::debug!(target: "credhost::helper", registry = %host, plugin, "credentials from the disk cache");
                return Ok(Some(auth));
            }
        }
        let provider = self.provider(plugin).await?;
        let Some(auth) = provider.registry_auth_with(None, None, &[AUTH_FORM]).await? else {
            return Ok(None);
        };
        if auth.extra.get("kind").is_some_and(|k| k.as_str() == "bearer") {
            return Err(Error::Unsupported(format!(
                "plugin `{plugin}` answered {host} with a bearer token, which the credential-helper protocol cannot carry (it passes a user name and password)"
            )));
        }
        if let Some(exp) = auth.expires_at.into_option().filter(|e| *e <= crate::token_cache::unix_now()) {
            tracing::warn!(target: "credhost::helper", registry = %host, plugin, "the plugin's credentials expired at {exp} (Unix time)");
        }
        if let Some((cache, file)) = &cached {
            match cache.store(file, plugin, &host, &auth) {
                Ok(true) => tracing::debug!(target: "credhost::helper", file = %file.display(), "cached"),
                Ok(false) => tracing::debug!(target: "credhost::helper", registry = %host, "not cached: expired or about to"),
                Err(e) => tracing::warn!(target: "credhost::helper", "cannot cache credentials: {e}"),
            }
        }
        Ok(Some(auth))
    }

    /// Every exactly known registry whose plugin hands out credentials, with
    /// the user name. Registries that need no credentials are left out;
    /// plugins that fail are reported in the log and left out.
    pub async fn list(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let hosts: Vec<String> = self.map.hosts().map(|(h, _)| h.to_owned()).collect();
        for host in hosts {
            match self.get(&host).await {
                Ok(Some(auth)) => {
                    out.insert(host, auth.username.to_string());
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(target: "credhost::helper", "{host}: {}", crate::cli::one_line(&e.to_string())),
            }
        }
        out
    }
}

/// Runs the helper and returns the process exit code.
pub fn main() -> i32 {
    crate::cli::init_logging(0, false);
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let [action] = args.as_slice() else {
        println!("{USAGE}");
        return 1;
    };
    match action.as_str() {
        "version" | "--version" | "-v" => {
            println!("docker-credential-credhost (credhost) {}", env!("CARGO_PKG_VERSION"));
            0
        }
        "--help" | "-h" => {
            println!("{USAGE}");
            0
        }
        "store" => {
            // Read what the client sends, so that it never sees a broken pipe
            // instead of the answer.
            let _ = read_stdin();
            fail("credhost does not store registry credentials: they come from the platform's plugin (plugins.toml), so `docker login` is not needed for the registries it serves")
        }
        "erase" => {
            let _ = read_stdin();
            fail("credhost does not store registry credentials, so there is nothing to erase: they come from the platform's plugin (plugins.toml)")
        }
        "get" | "list" => match run(action) {
            Ok(code) => code,
            Err(e) => fail(&crate::cli::one_line(&e.to_string())),
        },
        other => fail(&format!("unknown action `{other}`; {USAGE}")),
    }
}

/// The `get` answer; borrowed, so the secret is copied only into the output.
#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a str,
}

/// The protocol's error form: the message on stdout, status 1.
fn fail(message: &str) -> i32 {
    println!("{message}");
    1
}

fn read_stdin() -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .take(MAX_STDIN)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("cannot read", Path::new("standard input"), e))?;
    Ok(text)
}

fn run(action: &str) -> Result<i32> {
    let server = if action == "get" {
        let input = read_stdin()?;
        let server = input.trim().to_owned();
        if server.is_empty() {
            return Ok(fail("no credentials server URL"));
        }
        Some(server)
    } else {
        None
    };
    let path = config_path().ok_or_else(|| Error::Config {
        location: crate::config::CONFIG_ENV.into(),
        message: "no configuration: set CREDHOST_CONFIG or create ~/.config/credhost/plugins.toml".into(),
    })?;
    let helper = CredentialHelper::new(Config::load(&path, None)?)?;
    // One registry per run: a single thread is plenty, and plugins run on their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(async {
        match server {
            Some(server) => match helper.get(&server).await? {
                Some(auth) => {
                    let answer = Answer { server_url: &server, username: auth.username.as_str(), secret: auth.secret.expose() };
                    let text = Zeroizing::new(
                        serde_json::to_string(&answer).map_err(|e| Error::Internal(format!("cannot format JSON: {e}")))?,
                    );
                    println!("{}", text.as_str());
                    Ok(0)
                }
                None => Ok(fail(NOT_FOUND)),
            },
            None => {
                let list = helper.list().await;
                println!("{}", serde_json::to_string(&list).map_err(|e| Error::Internal(format!("cannot format JSON: {e}")))?);
                Ok(0)
            }
        }
    });
    runtime.shutdown_background();
    result
}
