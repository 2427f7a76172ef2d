//! Registry credentials by registry host, from whichever instance serves it:
//! the one routing every front end uses (`credhost token --registry`, the
//! docker credential helper, `docker-config`, the Python package).

use std::{collections::BTreeMap, path::Path};

use credhost_plugin_api::rules::unix_now;

use crate::{
    config::Config,
    disk_cache::{self, DiskCache},
    patterns::checked_host,
    registries::RegistryMap,
    types::unix_seconds,
    AuthForm, AuthKind, Error, Host, ProviderHandle, RegistryAuth, Result,
};

/// Registry credentials for any registry a configuration serves, each from
/// the instance that serves it (see [`RegistryMap`]), with one provider (and
/// token cache) per instance.
pub struct Registries {
    host: Host,
    /// Built on first use: reading it loads every instance's plugin.
    map: tokio::sync::OnceCell<RegistryMap>,
    cache: std::sync::OnceLock<Option<DiskCache>>,
    providers: tokio::sync::Mutex<BTreeMap<String, ProviderHandle>>,
    /// The caller's label in audit lines.
    label: Option<String>,
    /// Credentials are logged as issued to the kubelet.
    kubelet: bool,
}

impl Registries {
    /// The registries of `config`. Nothing is loaded or opened yet.
    pub fn new(config: Config) -> Self {
        Self {
            host: Host::new(config),
            map: Default::default(),
            cache: Default::default(),
            providers: Default::default(),
            label: None,
            kubelet: false,
        }
    }

    /// With `label` in the audit lines of what is handed out (see
    /// [`ProviderHandle::with_audit_label`]).
    pub fn with_audit_label(mut self, label: &str) -> Self {
        self.label = Some(label.to_owned());
        self
    }

    /// Credentials handed out logged as issued to the kubelet (operation
    /// `kubelet` in the audit log).
    pub fn for_kubelet(mut self) -> Self {
        self.kubelet = true;
        self
    }

    /// `provider` as this caller uses it: its audit label and operation.
    fn as_caller(&self, mut provider: ProviderHandle) -> ProviderHandle {
        if let Some(label) = &self.label {
            provider = provider.with_audit_label(label);
        }
        if self.kubelet {
            provider = provider.for_kubelet();
        }
        provider
    }

    /// Writes the audit line of credentials handed out from the disk cache.
    async fn audit_cached(&self, instance: &str, host: &str, auth: &RegistryAuth) -> Result<()> {
        let Some(settings) = &self.config().audit else { return Ok(()) };
        let log = crate::audit::AuditLog::open(settings)?;
        let plugin = self.config().instances.get(instance).map(|i| i.plugin.clone());
        let op = if self.kubelet { "kubelet" } else { "token" };
        let mut record =
            crate::audit::record(op, instance, serde_json::json!({ "name": plugin }), self.label.as_deref());
        record.insert("registry".into(), host.into());
        record.insert("source".into(), "disk cache".into());
        record.insert("outcome".into(), "ok".into());
        if let serde_json::Value::Object(m) = crate::provider::auth_issued(Some(auth), &log) {
            record.extend(m);
        }
        log.write(serde_json::Value::Object(record))
            .await
            .map_err(|e| Error::Audit(format!("{e}; nothing was handed out")))
    }

    /// With `[credential_helper] cache = true`, the disk cache the answers of
    /// [`Registries::get`] are also kept in, opened on first use (a cache
    /// that cannot be used is logged and skipped: credentials still flow,
    /// only slower).
    fn disk_cache(&self) -> Option<&DiskCache> {
        self.cache
            .get_or_init(|| {
                let settings = &self.config().credential_helper;
                if !settings.cache {
                    return None;
                }
                let Some(dir) = settings.cache_dir.clone().or_else(disk_cache::default_dir) else {
                    tracing::warn!(target: "credhost::cache", "not caching credentials: no cache directory (set credential_helper.cache_dir)");
                    return None;
                };
                DiskCache::open(&dir)
                    .map_err(|e| tracing::warn!(target: "credhost::cache", "not caching credentials: {e}"))
                    .ok()
            })
            .as_ref()
    }

    /// [`Registries::new`], using `provider` (and its token cache) for its
    /// instance.
    pub fn with_provider(config: Config, provider: ProviderHandle) -> Self {
        let registries = Self::new(config);
        registries.providers.try_lock().map(|mut p| p.insert(provider.name().to_owned(), provider)).ok();
        registries
    }

    /// Reads `path` and builds [`Registries::new`] over it.
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(Self::new(Config::load(path, None)?))
    }

    /// The registry map, built on first use (every instance's plugin is
    /// loaded, on a blocking thread, to read what it declares).
    pub async fn map(&self) -> Result<&RegistryMap> {
        self.map
            .get_or_try_init(|| async {
                // Loading a missing file fails below, and says so; why it
                // could not be installed is said here.
                for (instance, e) in self.host.install_missing().await {
                    tracing::warn!(target: "credhost::oci", instance, "auto_install failed: {e}");
                }
                let host = self.host.clone();
                tokio::task::spawn_blocking(move || host.registry_map())
                    .await
                    .map_err(|e| Error::Internal(format!("the registry map task failed: {e}")))?
            })
            .await
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.host.config()
    }

    /// The providers built so far; none while one is being built (the
    /// caller looks again later rather than wait for a constructor).
    pub(crate) fn built(&self) -> Vec<ProviderHandle> {
        self.providers.try_lock().map(|p| p.values().cloned().collect()).unwrap_or_default()
    }

    /// The provider of instance `instance`: the one built before (and
    /// shared by every registry it serves), unless its plugin panicked in
    /// it, else a new one.
    pub async fn provider(&self, instance: &str) -> Result<ProviderHandle> {
        let mut providers = self.providers.lock().await;
        if let Some(p) = providers.get(instance).filter(|p| !p.is_failed()) {
            return Ok(self.as_caller(p.clone()));
        }
        let p = self.host.provider(instance).await?;
        providers.insert(instance.to_owned(), p.clone());
        Ok(self.as_caller(p))
    }

    /// Registry credentials for `registry` (a host or URL), from the
    /// instance that serves it; a host no instance is known to serve goes to
    /// the active instance, whose plugin decides. `None` for `registry` is
    /// the active instance's own registry. Optionally for a token `scope`,
    /// and in the `form` the caller can hand on.
    pub async fn auth(
        &self,
        registry: Option<&str>,
        scope: Option<&str>,
        form: AuthForm,
    ) -> Result<Option<RegistryAuth>> {
        let platform = self.config().platform.clone();
        let Some(server) = registry else {
            return self.provider(&platform).await?.registry_auth_as(None, scope, form).await;
        };
        let host = checked_host(server)?;
        let map = self.map().await?;
        let instance = match map.resolve(&host) {
            Some(route) => route.instance,
            None => {
                unresolved(map, &host)?;
                platform
            }
        };
        self.provider(&instance).await?.registry_auth_as(Some(&host), scope, form).await
    }

    /// Credentials for `server` (a host or URL) as registry clients need
    /// them (a user name and password, [`AuthForm::Basic`]): `None` when no
    /// instance serves it or its registry needs none. When an instance whose
    /// plugin cannot be loaded might serve it, that failure is the answer,
    /// never "none" (a client would go on anonymously and fail later).
    pub async fn get(&self, server: &str) -> Result<Option<RegistryAuth>> {
        let host = checked_host(server)?;
        let map = self.map().await?;
        let Some(route) = map.resolve(&host) else {
            unresolved(map, &host)?;
            tracing::debug!(target: "credhost::registries", registry = %host, "no instance serves this registry");
            return Ok(None);
        };
        let instance = route.instance.as_str();
        let cached = self.disk_cache().map(|cache| {
            let id = disk_cache::identity(self.config(), instance, map.info(instance));
            (cache, cache.file_for(instance, &host, &id))
        });
        if let Some((cache, file)) = &cached {
            if let Some(auth) = cache.load(file) {
                tracing::debug!(target: "credhost::registries", registry = %host, instance, "credentials from the disk cache");
                self.audit_cached(instance, &host, &auth).await?;
                return Ok(Some(auth));
            }
        }
        let provider = self.provider(instance).await?;
        let Some(auth) = provider.registry_auth_as(Some(&host), None, AuthForm::Basic).await? else {
            return Ok(None);
        };
        if auth.kind == AuthKind::Bearer {
            return Err(Error::Unsupported {
                instance: instance.to_owned(),
                op: "registry credentials",
                why: format!(
                    "the plugin answered {host} with a bearer token, which registry clients cannot be handed here (they need a user name and password)"
                ),
            });
        }
        if let Some(exp) = auth.expires_at.map(unix_seconds).filter(|e| *e <= unix_now()) {
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
    pub async fn list(&self) -> Result<(BTreeMap<String, String>, Vec<(String, Error)>)> {
        let mut out = BTreeMap::new();
        let mut failed = Vec::new();
        let hosts: Vec<String> = self.map().await?.hosts().map(|(h, _)| h.to_owned()).collect();
        let answers = futures::future::join_all(hosts.iter().map(|host| self.get(host))).await;
        for (host, answer) in hosts.into_iter().zip(answers) {
            match answer {
                Ok(Some(auth)) => {
                    out.insert(host, auth.username);
                }
                Ok(None) => {}
                Err(e) => failed.push((host, e)),
            }
        }
        Ok((out, failed))
    }
}

/// `Ok` for a host no instance serves, unless an instance whose plugin
/// could not be loaded may serve it: then that failure is the answer (a
/// client told "no credentials" would go on anonymously and fail later).
pub(crate) fn unresolved(map: &RegistryMap, host: &str) -> Result<()> {
    let suspects = map.may_serve(host);
    let Some((_, kind, _)) = suspects.first() else { return Ok(()) };
    let why: Vec<String> = suspects
        .iter()
        .map(|(name, _, why)| format!("the plugin of instance `{name}` cannot be used ({why})"))
        .collect();
    Err(Error::Unresolved { registry: host.to_owned(), kind: *kind, why: why.join("; ") })
}
