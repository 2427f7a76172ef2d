//! The embedding API: load a configuration, get a provider, use it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use abi_stable::{sabi_trait::TD_Opaque, std_types::RStr};
use credhost_plugin_api::{ErrorKind as PluginKind, HostServices_TO};

use crate::{
    config::{Config, Instance},
    error::PluginFailure,
    loader::{self, LoadError, Loaded},
    provider::{AnyProvider, ProviderHandle},
    registries::{RegistryMap, Served},
    services::Services,
    Error, Operation, PluginInfo, Result,
};

/// A loaded configuration and the plugin instances it names.
///
/// ```no_run
/// # async fn demo() -> credhost::Result<()> {
/// let host = credhost::Host::from_file("plugins.toml".as_ref(), None)?;
/// let provider = host.active().await?;
/// let put = provider.upload_file("1234.zip".as_ref(), &Default::default()).await?;
/// println!("stored {}/{}", put.bucket, put.name);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Host {
    config: Config,
}

/// One row of [`Host::plugin_report`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    /// The instance name, or for an unconfigured file the name its file suggests.
    pub name: String,
    /// The plugin the instance runs.
    pub plugin: String,
    /// The plugin's version, when it loaded.
    pub version: Option<String>,
    /// The plugin interface version it was built against, when it loaded.
    pub api_version: Option<String>,
    /// What the plugin offers, when it loaded.
    pub capabilities: Vec<Operation>,
    /// The plugin's one-line description, when it loaded and has one.
    pub description: Option<String>,
    /// The file.
    pub path: Option<String>,
    /// The file's sha256, when readable.
    pub sha256: Option<String>,
    /// `loaded`, `refused: <reason>`, or for files no instance uses
    /// `not configured (not loaded)`.
    pub status: String,
    /// Where the instance's plugin runs: `in-process` or `process` (`-` for
    /// files no instance uses).
    pub isolation: &'static str,
    /// With `isolation = "process"`, the pid of the instance's running
    /// child, when the report is of a running host that has one (a report
    /// starts nothing; see [`PluginStatus::with_process`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl PluginStatus {
    /// The row with the pid of `provider`'s child, when it is this row's
    /// instance and runs in a process of its own.
    pub fn with_process(mut self, provider: &crate::ProviderHandle) -> Self {
        if provider.name() == self.name && self.isolation == "process" {
            self.pid = provider.process_id();
        }
        self
    }
}

impl Host {
    /// Loads `path`; `platform` (e.g. a command-line choice) overrides the
    /// file and `CREDHOST_PLATFORM`.
    pub fn from_file(path: &Path, platform: Option<&str>) -> Result<Self> {
        Ok(Self::new(Config::load(path, platform)?))
    }

    /// Wraps an already parsed configuration.
    pub fn new(config: Config) -> Self {
        if let Some(audit) = &config.audit {
            // Before any plugin process starts.
            crate::audit::hide_from_plugins(&audit.key_env);
        }
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The active instance's name.
    pub fn platform(&self) -> &str {
        &self.config.platform
    }

    /// The file instance `name`'s plugin is loaded from: its `file`, or
    /// `libcredhost_PLUGIN.so` (and the platform's equivalents) in the
    /// plugin directory. Never a directory scan.
    pub fn plugin_file(&self, name: &str) -> Result<PathBuf> {
        Ok(self.file_of(self.config.instance(name)?))
    }

    fn file_of(&self, instance: &Instance) -> PathBuf {
        let default_name = loader::default_library(&instance.plugin);
        let file = instance.file.as_deref().unwrap_or(&default_name);
        loader::resolve_file(file, &self.config.plugin_dir, &self.config.base_dir)
    }

    /// How plugin files are vetted under this configuration.
    pub fn policy(&self) -> loader::Policy {
        loader::Policy { allow_insecure_permissions: self.config.allow_insecure_permissions }
    }

    /// Vets and loads instance `name`'s plugin file and checks that it is the
    /// plugin the instance names. Blocks (file checks, hashing, `dlopen`).
    pub fn load_plugin(&self, name: &str) -> Result<(PathBuf, Loaded)> {
        let instance = self.config.instance(name)?;
        let path = self.file_of(instance);
        let load_err = |source| Error::Load { plugin: name.to_owned(), source };
        let loaded = loader::load_file(&path, instance.sha256.as_deref(), self.policy()).map_err(load_err)?;
        let declared = loaded.info().name.into_string();
        if declared != instance.plugin {
            return Err(load_err(LoadError::NameMismatch { path, declared, expected: instance.plugin.clone() }));
        }
        Ok((path, loaded))
    }

    /// What instance `name`'s plugin says about itself.
    pub fn plugin_info(&self, name: &str) -> Result<PluginInfo> {
        let (_, loaded) = self.load_plugin(name)?;
        Ok(PluginInfo::from_api(&loaded.info(), loaded.interface()))
    }

    /// The registry map: which instance serves which registry host. Loads
    /// every instance's plugin to read what it declares; an instance whose
    /// plugin cannot be loaded serves only the hosts the configuration lists
    /// for it, and the map keeps why it failed
    /// ([`RegistryMap::unloaded`]). Blocks while plugin files are vetted and
    /// loaded: call it off async worker threads.
    pub fn registry_map(&self) -> Result<RegistryMap> {
        let mut infos = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for name in self.config.instances.keys() {
            match self.plugin_info(name) {
                Ok(info) => {
                    infos.insert(name.clone(), info);
                }
                Err(e) => {
                    tracing::warn!(target: "credhost::registries", "{}", crate::one_line(&e.to_string()));
                    failed.insert(name.clone(), e);
                }
            }
        }
        Ok(RegistryMap::new(&self.config, &infos)?.with_unloaded(&self.config, failed))
    }

    /// Every configured instance, and how its plugin file fared, plus the
    /// plugin-looking files in the plugin directory that no instance uses
    /// (listed by name and sha256, never loaded). Failures do not stop the
    /// others.
    pub fn plugin_report(&self) -> Vec<PluginStatus> {
        let mut rows = Vec::new();
        let mut claimed = Vec::new();
        for (name, instance) in &self.config.instances {
            let path = self.file_of(instance);
            claimed.push(canonical(&path));
            let mut row = status_row(name, &instance.plugin, &path, self.policy());
            row.isolation = match instance.isolation {
                crate::config::Isolation::InProcess => "in-process",
                crate::config::Isolation::Process => "process",
            };
            // A plugin meant to run in a process of its own is loaded in
            // one to be described, never into this process.
            let loaded = match instance.isolation {
                crate::config::Isolation::InProcess => {
                    self.load_plugin(name).map(|(_, loaded)| (loaded.info(), loaded.interface()))
                }
                crate::config::Isolation::Process => self.describe_in_child(instance),
            };
            match loaded {
                Ok((info, interface)) => {
                    let info = PluginInfo::from_api(&info, interface);
                    row.version = Some(info.version.clone());
                    row.api_version = Some(info.api_version.clone());
                    row.capabilities = info.capabilities.clone();
                    row.description = info.description.clone();
                    row.status = "loaded".into();
                }
                Err(Error::Load { source, .. }) => row.status = format!("refused: {source}"),
                Err(other) => row.status = format!("refused: {other}"),
            }
            rows.push(row);
        }
        for path in loader::candidates(&self.config.plugin_dir) {
            if claimed.contains(&canonical(&path)) {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
            let stem = stem.strip_prefix(std::env::consts::DLL_PREFIX).unwrap_or(stem);
            let plugin = stem.strip_prefix("credhost_").unwrap_or(stem).to_owned();
            let mut row = status_row(&plugin, &plugin, &path, self.policy());
            row.status = "not configured (not loaded)".into();
            rows.push(row);
        }
        rows
    }

    /// [`crate::isolation::ProcessProvider::describe`], from any thread
    /// (in a runtime or not).
    fn describe_in_child(
        &self,
        instance: &crate::config::Instance,
    ) -> Result<(credhost_plugin_api::PluginInfo, &'static str)> {
        let (path, policy) = (self.config.path.clone(), self.policy());
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| Error::Internal(format!("cannot start a runtime: {e}")))?;
                    rt.block_on(crate::isolation::ProcessProvider::describe(instance, &path, policy))
                })
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("describing the plugin panicked".into())))
        })
    }

    /// A provider for the active instance.
    pub async fn active(&self) -> Result<ProviderHandle> {
        self.provider(&self.config.platform.clone()).await
    }

    /// A provider for instance `name`, built from its settings: a new one
    /// (with its own token cache) at each call. With `isolation =
    /// "process"`, the plugin is loaded and runs in a child process.
    pub async fn provider(&self, name: &str) -> Result<ProviderHandle> {
        let instance = self.config.instance(name)?.clone();
        self.auto_install(&instance).await?;
        let (info, interface, provider) = match instance.isolation {
            crate::config::Isolation::InProcess => self.construct(name).await?,
            crate::config::Isolation::Process => {
                let (p, info, interface) =
                    crate::isolation::ProcessProvider::start(&instance, &self.config.path, self.policy()).await?;
                (info, interface, AnyProvider::Process(p))
            }
        };
        let info = PluginInfo::from_api(&info, interface);
        let served = Served::new(&self.config, name, Some(&info));
        let audit = self.audit_for(&instance, &info).await?;
        Ok(ProviderHandle::new(instance.name, instance.plugin, info, interface, provider, instance.limits, served)
            .with_instance_options(audit, instance.create_only_best_effort))
    }

    /// Installs the missing plugin file of every instance with `oci` and
    /// `auto_install` set (see [`Host::provider`], which does it for the
    /// instance it builds); the instances whose install failed, with why.
    pub async fn install_missing(&self) -> Vec<(String, Error)> {
        let mut failed = Vec::new();
        for instance in self.config.instances.values().filter(|i| i.auto_install) {
            if let Err(e) = self.auto_install(instance).await {
                failed.push((instance.name.clone(), e));
            }
        }
        failed
    }

    /// Fetches the plugin file of an instance with `oci` and `auto_install`
    /// set when it is missing, as `credhost plugins install` would, with
    /// the registry credentials of the docker configuration (or none). The
    /// loader then checks the `sha256` pin as for any file.
    ///
    /// Boxed: looking up credentials loads the other instances (none of
    /// them installing), which comes back through [`Host::provider`].
    fn auto_install<'a>(&'a self, instance: &'a crate::config::Instance) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (Some(oci), true) = (&instance.oci, instance.auto_install) else { return Ok(()) };
            let path = self.file_of(instance);
            if tokio::fs::symlink_metadata(&path).await.is_ok() {
                return Ok(());
            }
            let reference = crate::oci::ArtifactRef::parse(oci)?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| self.config.plugin_dir.clone());
            let installs_at = dir.join(loader::library_file_name(&loader::default_library(&instance.plugin)));
            if installs_at != path {
                return Err(Error::InvalidInput(format!(
                    "plugins.{}: auto_install writes {}, but the instance loads {} (remove `file`, or install by hand)",
                    instance.name,
                    installs_at.display(),
                    path.display()
                )));
            }
            let opts = crate::oci::InstallOptions {
                dir,
                plugin: Some(instance.plugin.clone()),
                max_bytes: self.config.plugin_download_max,
                policy: self.policy(),
                expect_sha256: instance.sha256.clone(),
            };
            let auth = crate::oci::registry_credentials(Some(&self.config), reference.registry()).await?;
            tracing::info!(target: "credhost::oci", instance = %instance.name, %reference, "the plugin file is missing: installing it (auto_install)");
            let installed = match instance.isolation {
                crate::config::Isolation::InProcess => crate::oci::install(&reference, &auth, &opts).await?,
                // Never loaded here: the file is vetted without loading it, and
                // its process loads it.
                crate::config::Isolation::Process => {
                    let fetched = crate::oci::fetch(&reference, &auth, &opts).await?;
                    let policy = self.policy();
                    tokio::task::spawn_blocking(move || {
                        loader::vet(fetched.path(), None, policy)
                            .map_err(|e| Error::Load { plugin: fetched.name.clone(), source: e })?;
                        let name = fetched.name.clone();
                        fetched.place(&name)
                    })
                    .await
                    .map_err(|e| Error::Internal(format!("{e}")))??
                }
            };
            debug_assert_eq!(installed.file, path);
            Ok(())
        })
    }

    /// The audit log of the configuration, with how its lines name the
    /// plugin of `instance` (its file's sha256 read through a vetted handle).
    async fn audit_for(
        &self,
        instance: &crate::config::Instance,
        info: &PluginInfo,
    ) -> Result<Option<crate::provider::Audit>> {
        let Some(settings) = &self.config.audit else { return Ok(None) };
        let log = crate::audit::AuditLog::open(settings)?;
        let sha256 = match &instance.sha256 {
            Some(pin) => Some(pin.to_ascii_lowercase()),
            None => {
                let (path, policy) = (self.file_of(instance), self.policy());
                tokio::task::spawn_blocking(move || loader::sha256_file(&path, policy).ok()).await.ok().flatten()
            }
        };
        let plugin = serde_json::json!({ "name": info.name, "version": info.version, "sha256": sha256 });
        Ok(Some(crate::provider::Audit { log, plugin }))
    }

    /// Loads instance `name`'s plugin into this process and builds its
    /// provider: the plugin's description, its interface minor, the provider.
    pub(crate) async fn construct(
        &self,
        name: &str,
    ) -> Result<(credhost_plugin_api::PluginInfo, &'static str, AnyProvider)> {
        let instance = self.config.instance(name)?.clone();
        // Vetting hashes the file and `dlopen` reads it: not on an async worker.
        let loading = {
            let (host, name) = (self.clone(), name.to_owned());
            tokio::task::spawn_blocking(move || host.load_plugin(&name))
        };
        let (_path, loaded) =
            loading.await.map_err(|e| Error::Internal(format!("the plugin loading task failed: {e}")))??;
        let settings = self.config.settings_json(name);
        let services = Services::new(&instance.plugin, &self.config.base_dir);
        // Plugin constructors are synchronous and may wait for their own
        // runtime, so they run on a thread of their own, never on an async
        // worker. One that never returns costs that thread, not the caller:
        // the deadline lets go of it (and no runtime waits for it at exit).
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("credhost-init-{name}"))
            .spawn(move || {
                let services = HostServices_TO::from_value(services, TD_Opaque);
                let settings = RStr::from_str(&settings);
                let built = match loaded {
                    Loaded::V1_3(root) => {
                        (root.new_provider())(settings, services).into_result().map(AnyProvider::V1_3)
                    }
                    Loaded::V1_2(root) => {
                        (root.new_provider())(settings, services).into_result().map(AnyProvider::V1_2)
                    }
                    Loaded::V1_1(root) => {
                        (root.new_provider())(settings, services).into_result().map(AnyProvider::V1_1)
                    }
                    Loaded::V1_0(root) => {
                        (root.new_provider())(settings, services).into_result().map(AnyProvider::V1_0)
                    }
                };
                let _ = tx.send(built);
            })
            .map_err(|e| Error::Internal(format!("cannot start a thread for the plugin constructor: {e}")))?;
        let limit = instance.limits.call;
        let built = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(built)) => built,
            Ok(Err(_)) => {
                return Err(Error::Internal("the plugin constructor's thread ended without an answer".into()))
            }
            Err(_) => return Err(Error::Timeout { instance: name.to_owned(), op: "init", after: limit }),
        };
        let provider = built.map_err(|source| {
            let mut source = PluginFailure::from_api(&source);
            if let Some(key) = source.setting.clone() {
                // Point at the file and line of the setting at fault.
                let mut path = vec!["plugins", name, "settings"];
                path.extend(key.split('.').filter(|k| !k.is_empty()));
                let location = self.config.locate(&path);
                let dotted = if key.is_empty() { String::new() } else { format!(".{key}") };
                return Error::Config {
                    location,
                    message: format!("plugins.{name}.settings{dotted}: {}", source.message),
                };
            }
            if source.plugin_kind == PluginKind::CONFIG.name() {
                source.message = format!("settings: {}", source.message);
            }
            Error::Plugin { instance: name.to_owned(), op: "init", source }
        })?;
        Ok((loaded.info(), loaded.interface(), provider))
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn status_row(name: &str, plugin: &str, path: &Path, policy: loader::Policy) -> PluginStatus {
    PluginStatus {
        name: name.to_owned(),
        plugin: plugin.to_owned(),
        version: None,
        api_version: None,
        capabilities: Vec::new(),
        description: None,
        path: Some(path.display().to_string()),
        sha256: loader::sha256_file(path, policy).ok(),
        status: String::new(),
        isolation: "-",
        pid: None,
    }
}
