//! The embedding API: load a configuration, get the active provider, use it.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RSliceMut, RStr, RString},
};
use credhost_plugin_api::{
    ByteSource, ByteSource_TO, CheckReport, CheckRequest, CredentialEntry, CredentialsRequest,
    DownloadDest, DownloadRequest, ErrorKind, Extra, HostServices, HostServices_TO, LogLevel,
    PResult, PluginError, PluginInfo, ProgressBox, ProviderBox, RegistryAuth, RegistryRequest,
    TransferResult, UploadRequest, UploadSource,
};

use crate::{
    config::Config,
    loader::{self, LoadError, Loaded},
    names,
    token_cache::TokenCache,
    Error, Result,
};

/// A loaded configuration and the plugins it names.
///
/// ```no_run
/// # async fn demo() -> credhost::Result<()> {
/// let host = credhost::Host::from_file("plugins.toml".as_ref(), None)?;
/// let provider = host.active().await?;
/// let put = provider.upload_file("1234.zip".as_ref(), &Default::default()).await?;
/// println!("stored {}/{}", put.bucket, put.name);
/// # Ok(()) }
/// ```
pub struct Host {
    config: Config,
}

/// One row of [`Host::plugin_report`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    /// The plugin name (configured, or declared by a discovered file).
    pub name: String,
    /// The plugin's version, when it loaded.
    pub version: Option<String>,
    /// The plugin-api version it was built against, when it loaded.
    pub api_version: Option<String>,
    /// The file.
    pub path: Option<String>,
    /// The file's sha256, when readable.
    pub sha256: Option<String>,
    /// `loaded`, or `refused: <reason>`.
    pub status: String,
}

impl Host {
    /// Loads `path`; `platform` (e.g. from `--platform`) overrides the file
    /// and `CREDHOST_PLATFORM`.
    pub fn from_file(path: &Path, platform: Option<&str>) -> Result<Self> {
        Ok(Self { config: Config::load(path, platform)? })
    }

    /// Wraps an already parsed configuration.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The active platform's name.
    pub fn platform(&self) -> &str {
        &self.config.platform
    }

    /// Finds and loads the plugin file for the configured plugin `name`.
    pub fn load_plugin(&self, name: &str) -> Result<(PathBuf, Loaded)> {
        let entry = self.config.plugins.get(name).ok_or_else(|| Error::Config {
            location: self.config.path.display().to_string(),
            message: format!("no [plugins.{name}] table"),
        })?;
        let load_err = |source| Error::Load { plugin: name.to_owned(), source };
        let default_name = format!("credhost_{name}");
        let file = entry.file.as_deref().unwrap_or(&default_name);
        let path = loader::resolve_file(file, &self.config.plugin_dir, &self.config.base_dir);
        if entry.file.is_none() && !path.exists() {
            // Not under its conventional file name: look for a file in the
            // plugin directory that declares this name.
            for candidate in loader::candidates(&self.config.plugin_dir) {
                if let Ok(loaded) = loader::load_file(&candidate, None) {
                    if loaded.info().name.as_str() == name {
                        if let Some(pin) = &entry.sha256 {
                            loader::load_file(&candidate, Some(pin)).map_err(load_err)?;
                        }
                        return Ok((candidate, loaded));
                    }
                }
            }
            return Err(load_err(LoadError::NotInDir { name: name.to_owned(), dir: self.config.plugin_dir.clone() }));
        }
        let loaded = loader::load_file(&path, entry.sha256.as_deref()).map_err(load_err)?;
        let declared = loaded.info().name.into_string();
        if declared != name {
            return Err(load_err(LoadError::NameMismatch { path, declared, expected: name.to_owned() }));
        }
        Ok((path, loaded))
    }

    /// Loads every configured plugin, plus unconfigured plugin files found in
    /// the plugin directory, and says how each fared. Failures do not stop the
    /// others.
    pub fn plugin_report(&self) -> Vec<PluginStatus> {
        let mut rows = Vec::new();
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut claimed = Vec::new();
        for name in self.config.plugins.keys() {
            let row = match self.load_plugin(name) {
                Ok((path, loaded)) => {
                    claimed.push(canonical(&path));
                    seen.insert(name.clone(), path.clone());
                    status_row(name, &path, Some(loaded.info()), "loaded".into())
                }
                Err(e) => {
                    let path = self.configured_path(name);
                    if let Some(p) = &path {
                        claimed.push(canonical(p));
                    }
                    let reason = match &e {
                        Error::Load { source, .. } => source.to_string(),
                        other => other.to_string(),
                    };
                    let mut row = match path {
                        Some(p) => status_row(name, &p, None, String::new()),
                        None => PluginStatus {
                            name: name.clone(),
                            version: None,
                            api_version: None,
                            path: None,
                            sha256: None,
                            status: String::new(),
                        },
                    };
                    row.status = format!("refused: {reason}");
                    row
                }
            };
            rows.push(row);
        }
        for path in loader::candidates(&self.config.plugin_dir) {
            if claimed.contains(&canonical(&path)) {
                continue;
            }
            let row = match loader::load_file(&path, None) {
                Ok(loaded) => {
                    let info = loaded.info();
                    let name = info.name.to_string();
                    match seen.get(&name) {
                        Some(first) => {
                            let e = LoadError::Duplicate { name: name.clone(), path: path.clone(), first: first.clone() };
                            status_row(&name, &path, Some(info), format!("refused: {e}"))
                        }
                        None => {
                            seen.insert(name.clone(), path.clone());
                            status_row(&name, &path, Some(info), "loaded (not configured)".into())
                        }
                    }
                }
                Err(e) => {
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
                    let stem = stem.strip_prefix(std::env::consts::DLL_PREFIX).unwrap_or(stem);
                    let name = stem.strip_prefix("credhost_").unwrap_or(stem).to_owned();
                    status_row(&name, &path, None, format!("refused: {e}"))
                }
            };
            rows.push(row);
        }
        rows
    }

    fn configured_path(&self, name: &str) -> Option<PathBuf> {
        let entry = self.config.plugins.get(name)?;
        let default_name = format!("credhost_{name}");
        let file = entry.file.as_deref().unwrap_or(&default_name);
        Some(loader::resolve_file(file, &self.config.plugin_dir, &self.config.base_dir))
    }

    /// A provider for the active platform.
    pub async fn active(&self) -> Result<ProviderHandle> {
        self.provider(&self.config.platform.clone()).await
    }

    /// A provider for plugin `name`, built from its settings.
    pub async fn provider(&self, name: &str) -> Result<ProviderHandle> {
        let (_path, loaded) = self.load_plugin(name)?;
        let info = loaded.info();
        let settings = self.config.settings_json(name);
        let services = Services { plugin: name.to_owned(), base_dir: self.config.base_dir.display().to_string() };
        let new_provider = loaded.root.new_provider();
        // Plugin constructors are synchronous and may wait for their own
        // runtime: never run them on an async worker.
        let built = tokio::task::spawn_blocking(move || {
            let services = HostServices_TO::from_value(services, TD_Opaque);
            new_provider(RStr::from_str(&settings), services).into_result()
        })
        .await
        .map_err(|e| Error::Internal(format!("plugin constructor task failed: {e}")))?;
        let provider = built.map_err(|source| {
            let mut source = source;
            if let Some(key) = source.config_key().map(str::to_owned) {
                // Point at the file and line of the setting at fault.
                let mut path = vec!["plugins", name, "settings"];
                path.extend(key.split('.').filter(|k| !k.is_empty()));
                let location = self.config.locate(&path);
                let dotted = if key.is_empty() { String::new() } else { format!(".{key}") };
                return Error::Config { location, message: format!("plugins.{name}.settings{dotted}: {}", source.message) };
            }
            if source.kind == ErrorKind::CONFIG {
                source.message = format!("settings: {}", source.message).into();
            }
            Error::Plugin { plugin: name.to_owned(), op: "init", source }
        })?;
        Ok(ProviderHandle {
            inner: Arc::new(Inner { name: name.to_owned(), info, provider, tokens: TokenCache::default() }),
        })
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn status_row(name: &str, path: &Path, info: Option<PluginInfo>, status: String) -> PluginStatus {
    PluginStatus {
        name: name.to_owned(),
        version: info.as_ref().map(|i| i.version.to_string()),
        api_version: info.as_ref().map(|i| i.api_version.to_string()),
        path: Some(path.display().to_string()),
        sha256: loader::sha256_file(path).ok(),
        status,
    }
}

/// Routes plugin logs into the host's `tracing` output.
struct Services {
    plugin: String,
    base_dir: String,
}

impl HostServices for Services {
    fn max_log_level(&self) -> LogLevel {
        use tracing::level_filters::LevelFilter;
        match LevelFilter::current() {
            LevelFilter::OFF => LogLevel(0),
            LevelFilter::ERROR => LogLevel::ERROR,
            LevelFilter::WARN => LogLevel::WARN,
            LevelFilter::INFO => LogLevel::INFO,
            LevelFilter::DEBUG => LogLevel::DEBUG,
            _ => LogLevel::TRACE,
        }
    }

    fn base_dir(&self) -> RString {
        self.base_dir.as_str().into()
    }

    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        let (plugin, target, message) = (self.plugin.as_str(), target.as_str(), message.as_str());
        match level {
            LogLevel::ERROR => tracing::error!(target: "credhost::plugin", plugin, target, "{message}"),
            LogLevel::WARN => tracing::warn!(target: "credhost::plugin", plugin, target, "{message}"),
            LogLevel::INFO => tracing::info!(target: "credhost::plugin", plugin, target, "{message}"),
            LogLevel::DEBUG => tracing::debug!(target: "credhost::plugin", plugin, target, "{message}"),
            _ => tracing::trace!(target: "credhost::plugin", plugin, target, "{message}"),
        }
    }
}

/// Options of [`ProviderHandle::upload_file`].
#[derive(Default)]
pub struct UploadOptions {
    /// The object name; the file name when `None`.
    pub name: Option<String>,
    /// Skip the ZIP check.
    pub no_verify: bool,
    /// Progress reporting.
    pub progress: Option<ProgressBox>,
}

/// A provider of one plugin, with a registry-credentials cache. Cheap to
/// clone; clones share the cache.
#[derive(Clone)]
pub struct ProviderHandle {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    info: PluginInfo,
    provider: ProviderBox,
    tokens: TokenCache,
}

impl ProviderHandle {
    /// The plugin name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The plugin's self-description.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    fn err(&self, op: &'static str) -> impl Fn(PluginError) -> Error + '_ {
        move |source| Error::Plugin { plugin: self.inner.name.clone(), op, source }
    }

    /// Registry credentials for `registry` (the plugin's default when `None`),
    /// optionally for a token `scope`; `None` when the registry needs none.
    /// Answers are cached until shortly before they expire.
    pub async fn registry_auth(&self, registry: Option<&str>, scope: Option<&str>) -> Result<Option<RegistryAuth>> {
        self.registry_auth_with(registry, scope, &[]).await
    }

    /// [`ProviderHandle::registry_auth`] with further request options
    /// (`RegistryRequest::extra`, e.g. `auth_form = basic`); answers are
    /// cached per registry, scope and options.
    pub async fn registry_auth_with(
        &self,
        registry: Option<&str>,
        scope: Option<&str>,
        options: &[(&str, &str)],
    ) -> Result<Option<RegistryAuth>> {
        let mut key = format!("{}\u{0}{}", registry.unwrap_or(""), scope.unwrap_or(""));
        for (k, v) in options {
            key.push_str(&format!("\u{0}{k}={v}"));
        }
        self.inner
            .tokens
            .get_or_fetch(&key, || async {
                let mut extra = Extra::new();
                for (k, v) in options {
                    extra.insert((*k).into(), (*v).into());
                }
                if let Some(scope) = scope {
                    extra.insert("scope".into(), scope.into());
                }
                let req = RegistryRequest { registry: registry.map(RString::from).into(), extra };
                let auth = self.inner.provider.registry_auth(req).await.into_result().map_err(self.err("registry token"))?;
                Ok(auth.into_option())
            })
            .await
    }

    /// Uploads a local file. Refuses, before sending anything, names that
    /// could escape a bucket, empty files and (unless `no_verify`) non-ZIPs.
    pub async fn upload_file(&self, path: &Path, opts: &UploadOptions) -> Result<TransferResult> {
        self.upload_file_with(path, opts.name.as_deref(), opts.no_verify, None).await
    }

    /// Like [`ProviderHandle::upload_file`], taking the progress object by value.
    pub async fn upload_file_with(
        &self,
        path: &Path,
        name: Option<&str>,
        no_verify: bool,
        progress: Option<ProgressBox>,
    ) -> Result<TransferResult> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .ok_or_else(|| Error::InvalidInput(format!("cannot derive a project name from {}", path.display())))?,
        };
        names::validate_name(&name)?;
        let owned = path.to_path_buf();
        let size = tokio::task::spawn_blocking(move || -> Result<u64> {
            if no_verify {
                let meta = std::fs::metadata(&owned).map_err(|e| Error::io("cannot read", &owned, e))?;
                if !meta.is_file() {
                    return Err(Error::InvalidInput(format!("{} is not a regular file", owned.display())));
                }
                if meta.len() == 0 {
                    return Err(Error::InvalidInput(format!("{} is empty (0 bytes); refusing to upload it", owned.display())));
                }
                Ok(meta.len())
            } else {
                names::verify_zip(&owned)
            }
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let abs = std::path::absolute(path).map_err(|e| Error::io("cannot resolve", path, e))?;
        let req = UploadRequest {
            name: name.into(),
            source: UploadSource::Path(abs.display().to_string().into()),
            size_hint: ROption::RSome(size),
            progress: progress.into(),
            extra: Extra::new(),
        };
        self.inner.provider.upload(req).await.into_result().map_err(self.err("upload"))
    }

    /// Uploads a stream of unknown length (a request body, a pipe). `reader`
    /// is read on a blocking thread; memory stays bounded. The name is
    /// validated; the content is not checked.
    pub async fn upload_reader<R: Read + Send + 'static>(
        &self,
        name: &str,
        reader: R,
        size_hint: Option<u64>,
        progress: Option<ProgressBox>,
    ) -> Result<TransferResult> {
        names::validate_name(name)?;
        let source = ByteSource_TO::from_value(ReadSource(reader), TD_Opaque);
        let req = UploadRequest {
            name: name.into(),
            source: UploadSource::Stream(source),
            size_hint: size_hint.into(),
            progress: progress.into(),
            extra: Extra::new(),
        };
        self.inner.provider.upload(req).await.into_result().map_err(self.err("upload"))
    }

    /// Downloads `bucket`/`name` to `dest`. The bytes go to a temporary file
    /// beside `dest`, which is renamed over `dest` only once the plugin has
    /// verified the whole object; on failure or cancellation nothing appears
    /// at `dest`. Refuses to replace an existing `dest` unless `force`.
    pub async fn download_to_path(
        &self,
        bucket: &str,
        name: &str,
        dest: &Path,
        force: bool,
        progress: Option<ProgressBox>,
    ) -> Result<TransferResult> {
        names::validate_bucket(bucket)?;
        names::validate_name(name)?;
        if !force && std::fs::symlink_metadata(dest).is_ok() {
            return Err(Error::Exists(dest.to_path_buf()));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("download");
        // The plugin writes into a private directory beside `dest`, removed
        // with everything in it on error and when this future is dropped.
        // A directory rather than a file: a cancelled plugin task may still
        // (re)create its output file after the host gave up, and it cannot
        // once the directory is gone.
        let work = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".part")
            .tempdir_in(&dir)
            .map_err(|e| Error::io("cannot create a directory in", &dir, e))?;
        let part = std::path::absolute(work.path().join(file_name)).map_err(|e| Error::io("cannot resolve", work.path(), e))?;
        let req = DownloadRequest {
            bucket: bucket.into(),
            name: name.into(),
            dest: DownloadDest::Path(part.display().to_string().into()),
            progress: progress.into(),
            extra: Extra::new(),
        };
        let result = self.inner.provider.download(req).await.into_result().map_err(self.err("download"))?;
        let persisted = if force {
            std::fs::rename(&part, dest)
        } else {
            // A hard link fails when `dest` exists, so nothing is replaced
            // even if `dest` appeared during the download. Filesystems
            // without hard links get a check and a rename.
            match std::fs::hard_link(&part, dest) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    if std::fs::symlink_metadata(dest).is_ok() {
                        Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
                    } else {
                        std::fs::rename(&part, dest)
                    }
                }
                other => other,
            }
        };
        match persisted {
            Ok(()) => Ok(result),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists(dest.to_path_buf())),
            Err(e) => Err(Error::io("cannot write", dest, e)),
        }
    }

    /// The entries a build job needs, each marked secret or not.
    pub async fn credentials(&self) -> Result<Vec<CredentialEntry>> {
        let entries = self
            .inner
            .provider
            .credentials(CredentialsRequest::default())
            .await
            .into_result()
            .map_err(self.err("credentials"))?;
        Ok(entries.into_vec())
    }

    /// The plugin's live probe.
    pub async fn check(&self) -> Result<CheckReport> {
        self.inner.provider.check(CheckRequest::default()).await.into_result().map_err(self.err("check"))
    }

    /// Waits (at most `timeout`) for the clean-up work of cancelled operations
    /// to finish. Call it after dropping an operation's future when the
    /// process is about to exit, so that nothing partial is left behind.
    pub async fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.inner.provider.wait_idle()).await, Ok(abi_stable::std_types::RResult::ROk(())))
    }
}

/// A `std::io::Read` as a plugin byte source.
struct ReadSource<R>(R);

impl<R: Read + Send> ByteSource for ReadSource<R> {
    fn read(&mut self, mut buf: RSliceMut<'_, u8>) -> PResult<usize> {
        loop {
            match self.0.read(buf.as_mut_slice()) {
                Ok(n) => return PResult::ROk(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return PResult::RErr(PluginError::new(ErrorKind::IO, format!("reading the upload source: {e}"))),
            }
        }
    }
}
