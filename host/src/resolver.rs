//! Registry credentials by registry host, from whichever instance serves it:
//! what the docker credential helper and `docker-config` are built on.

use std::{collections::BTreeMap, path::Path};

use credhost_plugin_api::{rules::registry_host, AuthForm, AuthKind, RegistryAuth};

use crate::{
    config::Config,
    disk_cache::{self, DiskCache},
    registries::RegistryMap,
    Error, Host, ProviderHandle, Result,
};

/// Registry credentials for any registry the configuration serves.
///
/// Answers are in user-name-and-password form ([`AuthForm::Basic`]): the
/// registry clients this serves (the docker credential-helper protocol,
/// `auths` entries of a docker config) cannot carry a registry bearer token.
pub struct Registries {
    host: Host,
    map: RegistryMap,
    cache: Option<DiskCache>,
    providers: tokio::sync::Mutex<BTreeMap<String, ProviderHandle>>,
}

impl Registries {
    /// The registries of `config`: its registry map (see
    /// [`Host::registry_map`]) and, when `[credential_helper] cache = true`,
    /// the on-disk cache (a cache that cannot be used is logged and skipped:
    /// credentials still flow, only slower).
    pub fn new(config: Config) -> Result<Self> {
        let host = Host::new(config);
        let map = host.registry_map()?;
        let settings = &host.config().credential_helper;
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
        Ok(Self { host, map, cache, providers: Default::default() })
    }

    /// Reads `path` and builds [`Registries::new`] over it.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::new(Config::load(path, None)?)
    }

    /// The registry map.
    pub fn map(&self) -> &RegistryMap {
        &self.map
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.host.config()
    }

    async fn provider(&self, instance: &str) -> Result<ProviderHandle> {
        let mut providers = self.providers.lock().await;
        if let Some(p) = providers.get(instance) {
            return Ok(p.clone());
        }
        let p = self.host.provider(instance).await?;
        providers.insert(instance.to_owned(), p.clone());
        Ok(p)
    }

    /// Credentials for `server` (a host or URL): `None` when no instance
    /// serves it or its registry needs none. The instance is asked for its
    /// own registry's credentials; the answer is presented for every host
    /// mapped to that instance.
    pub async fn get(&self, server: &str) -> Result<Option<RegistryAuth>> {
        let host = registry_host(server);
        let Some(route) = self.map.resolve(&host) else {
            tracing::debug!(target: "credhost::registries", registry = %host, "no instance serves this registry");
            return Ok(None);
        };
        let instance = route.instance.as_str();
        let cached = match &self.cache {
            Some(cache) => {
                let info = self.host.plugin_info(instance).ok();
                let id = disk_cache::identity(self.host.config(), instance, info.as_ref());
                Some((cache, cache.file_for(instance, &host, &id)))
            }
            None => None,
        };
        if let Some((cache, file)) = &cached {
            if let Some(auth) = cache.load(file) {
                tracing::debug!(target: "credhost::registries", registry = %host, instance, "credentials from the disk cache");
                return Ok(Some(auth));
            }
        }
        let provider = self.provider(instance).await?;
        let Some(auth) = provider.registry_auth_as(None, None, AuthForm::Basic).await? else {
            return Ok(None);
        };
        if auth.kind() == Some(AuthKind::Bearer) {
            return Err(Error::Unsupported {
                instance: instance.to_owned(),
                op: "registry credentials",
                why: format!(
                    "the plugin answered {host} with a bearer token, which registry clients cannot be handed here (they need a user name and password)"
                ),
            });
        }
        if let Some(exp) = auth.expires_at.into_option().filter(|e| *e <= credhost_plugin_api::rules::unix_now()) {
            tracing::warn!(target: "credhost::registries", registry = %host, instance, "the plugin's credentials expired at {exp} (Unix time)");
        }
        if let Some((cache, file)) = &cached {
            match cache.store(file, instance, &host, &auth) {
                Ok(true) => tracing::debug!(target: "credhost::registries", file = %file.display(), "cached"),
                Ok(false) => {
                    tracing::debug!(target: "credhost::registries", registry = %host, "not cached: expired or about to")
                }
                Err(e) => tracing::warn!(target: "credhost::registries", "cannot cache credentials: {e}"),
            }
        }
        Ok(Some(auth))
    }

    /// Every exactly known registry whose instance hands out credentials,
    /// with the user name; registries that need none are left out. Hosts
    /// whose instance failed are returned apart, with the error. The
    /// instances are asked at the same time (hosts of one instance share its
    /// one request through the token cache).
    pub async fn list(&self) -> (BTreeMap<String, String>, Vec<(String, Error)>) {
        let mut out = BTreeMap::new();
        let mut failed = Vec::new();
        let hosts: Vec<String> = self.map.hosts().map(|(h, _)| h.to_owned()).collect();
        let answers = futures::future::join_all(hosts.iter().map(|host| self.get(host))).await;
        for (host, answer) in hosts.into_iter().zip(answers) {
            match answer {
                Ok(Some(auth)) => {
                    out.insert(host, auth.username.to_string());
                }
                Ok(None) => {}
                Err(e) => failed.push((host, e)),
            }
        }
        (out, failed)
    }
}
