//! Live platform switching for services that embed the host.
//!
//! A [`LiveHost`] holds the active provider and watches `plugins.toml`. When
//! the file changes it parses and validates the new text, loads the newly
//! active plugin's file, builds the provider and runs its `check`; only when
//! all of that succeeds is the new provider swapped in. Operations already
//! running keep the [`ProviderHandle`] they started with, so they finish on the
//! old platform; the next [`LiveHost::provider`] call gets the new one. A
//! change that fails any step is rejected: the old provider keeps serving, the
//! reason is logged and published in [`SwitchStatus::last_error`].
//!
//! The watcher polls the file's contents (default every second) rather than
//! subscribing to file-system events: the file is small, so reading it costs
//! microseconds, and a poll sees every way a file gets replaced (in-place
//! writes, editors' rename-over, Kubernetes ConfigMap symlink swaps, network
//! file systems without inotify), with no extra thread or dependency. A change
//! is acted on once the same contents were read twice in a row, so a file
//! caught half-written is not reported as broken.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use tokio::sync::watch;

use crate::{config::Config, Error, Host, ProviderHandle, Registries, Result};

/// How a [`LiveHost`] watches its file.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How often the file is read.
    pub interval: Duration,
    /// How long the new provider's `check` may take before the change is rejected.
    pub check_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), check_timeout: Duration::from_secs(30) }
    }
}

/// What a [`LiveHost`] is serving, and how the latest change went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchStatus {
    /// Counts provider swaps: 0 for the provider the host started with.
    pub generation: u64,
    /// The active platform.
    pub platform: String,
    /// Why the file's current contents were rejected; `None` when what the
    /// file says is what is being served.
    pub last_error: Option<String>,
    /// With `isolation = "process"`, the state of the active instance's
    /// plugin process (pid, crashes in a row, the pause before the next
    /// start), as of [`LiveHost::status`]; `None` in-process and in the
    /// values [`LiveHost::subscribe`] sends.
    pub process: Option<crate::ProcessState>,
}

/// A host whose active provider follows `plugins.toml`.
pub struct LiveHost {
    shared: Arc<Shared>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    refresher: tokio::task::JoinHandle<()>,
}

struct Shared {
    path: PathBuf,
    platform_override: Option<String>,
    check_timeout: Duration,
    current: RwLock<Arc<Active>>,
    status: watch::Sender<SwitchStatus>,
    /// Held only to read and update the bookkeeping, never across plugin
    /// code: a constructor or check that never returns must not stop later
    /// changes from being applied.
    reload: std::sync::Mutex<ReloadState>,
    /// The watcher's attempts still running, stopped with the host.
    attempts: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

struct Active {
    config: Arc<Config>,
    provider: ProviderHandle,
    /// What the provider was built from (see [`provider_identity`]).
    identity: String,
    /// Registry routing over this configuration, made on first use.
    registries: OnceLock<Arc<Registries>>,
}

impl Active {
    fn new(config: Config, provider: ProviderHandle, identity: String) -> Self {
        Self { config: Arc::new(config), provider, identity, registries: OnceLock::new() }
    }

    fn registries(&self) -> Arc<Registries> {
        self.registries
            .get_or_init(|| Arc::new(Registries::with_provider((*self.config).clone(), self.provider.clone())))
            .clone()
    }
}

#[derive(Default)]
struct ReloadState {
    /// The text the current configuration came from.
    applied: String,
    /// Text read once by the watcher, waiting to be read again unchanged.
    pending: Option<String>,
    /// Text that was rejected, so the watcher does not retry it every tick.
    rejected: Option<String>,
    /// Consecutive failed reads of the file.
    read_failures: u32,
    /// Counts attempts to apply a text; only the newest may finish.
    attempts: u64,
    /// The text an attempt is building a provider for.
    building: Option<String>,
}

/// What an attempt prepared, without holding any lock.
enum Prepared {
    /// Only things around the provider changed: keep it, take the new configuration.
    SameProvider(Box<Config>, String),
    /// A new provider, built and checked.
    NewProvider(Active),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The watcher: wait for the contents to settle, and do not retry rejected text.
    Poll,
    /// An explicit [`LiveHost::reload`].
    Manual,
}

impl LiveHost {
    /// Loads `path` and builds its active provider, without watching the file
    /// (call [`LiveHost::reload`] to apply changes). `platform` overrides the
    /// file and `CREDHOST_PLATFORM`, as for [`Host::from_file`]. The first
    /// provider is not `check`ed, like [`Host::active`].
    pub async fn open(path: &Path, platform: Option<&str>) -> Result<Self> {
        Self::start(path, platform, WatchOptions::default(), false).await
    }

    /// Like [`LiveHost::open`], and watches the file every `options.interval`.
    pub async fn watch(path: &Path, platform: Option<&str>, options: WatchOptions) -> Result<Self> {
        Self::start(path, platform, options, true).await
    }

    async fn start(path: &Path, platform: Option<&str>, options: WatchOptions, watch: bool) -> Result<Self> {
        let text = read(path).await?;
        let config = Config::from_text(path, &text, platform)?;
        let identity = provider_identity(&config);
        let provider = build_provider(config.clone()).await?;
        let status = SwitchStatus { generation: 0, platform: config.platform.clone(), last_error: None, process: None };
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            platform_override: platform.map(str::to_owned),
            check_timeout: options.check_timeout,
            current: RwLock::new(Arc::new(Active::new(config, provider, identity))),
            status: watch::Sender::new(status),
            reload: std::sync::Mutex::new(ReloadState { applied: text, ..Default::default() }),
            attempts: std::sync::Mutex::new(Vec::new()),
        });
        let watcher = watch.then(|| tokio::spawn(poll(shared.clone(), options.interval)));
        let refresher = tokio::spawn(refresh_ahead(shared.clone()));
        Ok(Self { shared, watcher, refresher })
    }

    /// The provider to start an operation with. Keep the handle for the
    /// whole operation: a switch never affects handles already handed out.
    pub fn provider(&self) -> ProviderHandle {
        self.shared.active().provider.clone()
    }

    /// Registry credentials by registry host over the configuration being
    /// served (see [`Registries`]), sharing the active provider and its
    /// token cache. Like [`LiveHost::provider`], keep it for one operation.
    pub fn registries(&self) -> Arc<Registries> {
        self.shared.active().registries()
    }

    /// The configuration being served.
    pub fn config(&self) -> Arc<Config> {
        self.shared.active().config.clone()
    }

    /// The current status.
    pub fn status(&self) -> SwitchStatus {
        let mut status = self.shared.status.borrow().clone();
        status.process = self.shared.active().provider.process_state();
        status
    }

    /// A receiver that sees every status change (switches and rejections).
    pub fn subscribe(&self) -> watch::Receiver<SwitchStatus> {
        self.shared.status.subscribe()
    }

    /// Reads the file now and applies it if it changed, even if the same
    /// contents were rejected before. `Ok(true)` when a new provider was
    /// swapped in, `Ok(false)` when there was nothing to switch; an error is
    /// why the change was rejected (the old provider keeps serving).
    pub async fn reload(&self) -> Result<bool> {
        let text = read(&self.shared.path).await?;
        self.shared.consider(text, Trigger::Manual).await
    }
}

impl Drop for LiveHost {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
        self.refresher.abort();
        for attempt in self.shared.attempts.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            attempt.abort();
        }
    }
}

impl Shared {
    fn active(&self) -> Arc<Active> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReloadState> {
        self.reload.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn consider(&self, text: String, trigger: Trigger) -> Result<bool> {
        let attempt = {
            let mut state = self.state();
            state.read_failures = 0;
            if text == state.applied {
                state.pending = None;
                state.rejected = None;
                // The file went back to what is being served: nothing is wrong any more.
                self.status.send_if_modified(|s| s.last_error.take().is_some());
                return Ok(false);
            }
            if trigger == Trigger::Poll {
                if state.rejected.as_deref() == Some(text.as_str()) || state.building.as_deref() == Some(text.as_str())
                {
                    return Ok(false);
                }
                if state.pending.as_deref() != Some(text.as_str()) {
                    state.pending = Some(text);
                    return Ok(false);
                }
            }
            state.pending = None;
            state.building = Some(text.clone());
            state.attempts += 1;
            state.attempts
        };
        let prepared = self.prepare(&text).await;
        let mut state = self.state();
        if state.attempts != attempt {
            // A newer text is being applied: this one no longer matters.
            return Ok(false);
        }
        state.building = None;
        match prepared {
            Ok(prepared) => {
                let switched = self.apply(prepared);
                state.applied = text;
                state.rejected = None;
                Ok(switched)
            }
            Err(e) => {
                let why = crate::error::one_line(&e.to_string());
                tracing::warn!(target: "credhost::live", file = %self.path.display(), "configuration change rejected, still serving `{}`: {why}", self.active().config.platform);
                self.status.send_modify(|s| s.last_error = Some(why));
                state.rejected = Some(text);
                Err(e)
            }
        }
    }

    /// Validates `text`, and unless the provider would be the same, builds
    /// and checks its provider.
    async fn prepare(&self, text: &str) -> Result<Prepared> {
        let config = Config::from_text(&self.path, text, self.platform_override.as_deref())?;
        let identity = provider_identity(&config);
        if identity == self.active().identity {
            return Ok(Prepared::SameProvider(Box::new(config), identity));
        }
        let platform = config.platform.clone();
        let provider = build_provider(config.clone()).await?;
        let report = match tokio::time::timeout(self.check_timeout, provider.check()).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::CheckFailed(format!(
                    "check of platform `{platform}` did not finish within {} s",
                    self.check_timeout.as_secs()
                )))
            }
        };
        if !report.ok() {
            let failed = report.failures().join("; ");
            return Err(Error::CheckFailed(format!("check of platform `{platform}` failed: {failed}")));
        }
        Ok(Prepared::NewProvider(Active::new(config, provider, identity)))
    }

    /// Swaps in what [`Shared::prepare`] made; whether the provider changed.
    fn apply(&self, prepared: Prepared) -> bool {
        let old = self.active();
        match prepared {
            Prepared::SameProvider(config, identity) => {
                // Comments, other instances or [registries] changed: keep the
                // provider and its token cache, and tell it which hosts the
                // configuration now maps to it.
                old.provider.reroute(&config);
                let active = Active::new(*config, old.provider.clone(), identity);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(active);
                self.status.send_if_modified(|s| s.last_error.take().is_some());
                false
            }
            Prepared::NewProvider(active) => {
                let platform = active.config.platform.clone();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(active);
                let mut generation = 0;
                self.status.send_modify(|s| {
                    s.generation += 1;
                    generation = s.generation;
                    s.platform = platform.clone();
                    s.last_error = None;
                });
                tracing::info!(target: "credhost::live", "switched from `{}` to `{platform}` (generation {generation})", old.config.platform);
                true
            }
        }
    }

    /// A provider that panicked is out of service: build it again from the
    /// configuration being served.
    async fn rebuild_if_failed(&self) {
        let current = self.active();
        if !current.provider.is_failed() {
            return;
        }
        match build_provider((*current.config).clone()).await {
            Ok(provider) => {
                let fresh = Active::new((*current.config).clone(), provider, current.identity.clone());
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
                self.status.send_modify(|s| s.generation += 1);
                tracing::warn!(target: "credhost::live", "the provider of `{}` panicked; built it again", current.config.platform);
            }
            Err(e) => {
                tracing::warn!(target: "credhost::live", "the provider of `{}` panicked and cannot be built again: {}", current.config.platform, crate::error::one_line(&e.to_string()))
            }
        }
    }
}

async fn poll(shared: Arc<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        shared.rebuild_if_failed().await;
        match read(&shared.path).await {
            // Each attempt runs on its own, so one stuck in a plugin does not
            // stop the watcher; rejections are logged and published by `consider`.
            Ok(text) => {
                let attempt = {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = shared.consider(text, Trigger::Poll).await;
                    })
                };
                let mut attempts = shared.attempts.lock().unwrap_or_else(|p| p.into_inner());
                attempts.retain(|a| !a.is_finished());
                attempts.push(attempt.abort_handle());
            }
            Err(e) => {
                // A file being replaced can be missing for a moment; say so
                // only when it stays unreadable.
                let mut state = shared.state();
                state.read_failures += 1;
                if state.read_failures == 2 {
                    let why = crate::error::one_line(&e.to_string());
                    tracing::warn!(target: "credhost::live", "{why}; still serving the configuration read before");
                    shared.status.send_modify(|s| s.last_error = Some(why));
                }
            }
        }
    }
}

/// How often [`refresh_ahead`] looks for registry credentials to refresh.
const REFRESH_TICK: Duration = Duration::from_secs(1);

/// Refreshes the registry credentials that the providers being served have
/// cached and that near their refresh point, so that no request waits on
/// the platform for credentials it asked for before (see
/// [`ProviderHandle::refresh_tokens`]).
async fn refresh_ahead(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(REFRESH_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each round runs on its own, so that a slow plugin call delays nothing
    // else (a key whose refresh is under way is skipped); aborted with this
    // task.
    let mut rounds = tokio::task::JoinSet::new();
    loop {
        ticks.tick().await;
        while rounds.try_join_next().is_some() {}
        let active = shared.active();
        let mut providers = vec![active.provider.clone()];
        if let Some(registries) = active.registries.get() {
            for p in registries.built() {
                if !providers.iter().any(|q| q.same_as(&p)) {
                    providers.push(p);
                }
            }
        }
        for p in providers {
            rounds.spawn(async move { p.refresh_tokens().await });
        }
    }
}

async fn read(path: &Path) -> Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::config::read_text(&path))
        .await
        .map_err(|e| Error::Internal(format!("reading the configuration: {e}")))?
}

/// Builds the active provider of `config` on a blocking thread: loading a
/// plugin file (pin hashing, `dlopen`) and plugin constructors block.
async fn build_provider(config: Config) -> Result<ProviderHandle> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(async move { Host::new(config).active().await }))
        .await
        .map_err(|e| Error::Internal(format!("provider construction task failed: {e}")))?
}

/// Everything a provider is built from; equal identities need no new provider.
fn provider_identity(config: &Config) -> String {
    let entry = config.instances.get(&config.platform);
    serde_json::json!({
        "platform": config.platform,
        "plugin_dir": config.plugin_dir,
        "base_dir": config.base_dir,
        "plugin": entry.map(|e| e.plugin.clone()),
        "file": entry.and_then(|e| e.file.clone()),
        "sha256": entry.and_then(|e| e.sha256.clone()),
        "limits": entry.map(|e| format!("{:?}", e.limits)),
        "settings": config.settings_json(&config.platform),
        "audit": config.audit.as_ref().map(|a| format!("{a:?}")),
    })
    .to_string()
}
