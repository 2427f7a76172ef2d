//! The plugin-author SDK.
//!
//! Implement [`CredentialProvider`] (ordinary `async fn`s returning
//! `Result<_, PluginError>`) and [`Plugin`] for one type, then call
//! [`export_plugin!`](crate::export_plugin) once:
//!
//! ```text
//! struct MyProvider { /* settings */ }
//! impl credhost_plugin_api::sdk::Plugin for MyProvider { /* NAME, VERSION, new() */ }
//! impl credhost_plugin_api::sdk::CredentialProvider for MyProvider { /* async fns */ }
//! credhost_plugin_api::export_plugin!(MyProvider);
//! ```
//!
//! The plugin crate must also depend on `abi_stable` (the export attribute
//! refers to it by name) and be built as a `cdylib` with `panic = "unwind"`.
//!
//! What the SDK takes care of, so that every plugin keeps the ABI rules:
//! - each plugin library owns a small tokio runtime, built on first use; every
//!   call is spawned there and the host receives an [`FfiFuture`] that only
//!   awaits the task, so any host executor can poll it; dropping the future
//!   aborts the task;
//! - no panic crosses the boundary: constructor, method bodies and tasks are
//!   guarded and a panic becomes an [`ErrorKind::PANICKED`] error;
//! - the plugin's `tracing` events (and panic messages) go to the host's log
//!   through [`HostServices`], attributed to the plugin;
//! - host byte sources and sinks become tokio `AsyncRead` / `AsyncWrite`.

use std::{
    collections::HashMap,
    future::Future,
    io,
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{ready, Context as TaskContext, Poll},
};

use abi_stable::std_types::{RResult, RString, RVec};
use async_ffi::{FfiFuture, FutureExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    ByteSinkBox, ByteSourceBox, Capabilities, CheckReport, CheckRequest, CredentialEntry, CredentialsRequest,
    DownloadDest, DownloadRequest, ErrorKind, Extra, HostServices, HostServicesBox, LogLevel, PResult, PluginError,
    PluginInfo, ProgressBox, Provider, RegistryAuth, RegistryRequest, TransferResult, UploadRequest, UploadSource,
    API_VERSION,
};

/// A plugin library: its identity and how to build a provider from settings.
pub trait Plugin: CredentialProvider + Sized {
    /// The platform name, e.g. `local`. Unique among the plugins a host loads.
    const NAME: &'static str;
    /// The plugin's own version (usually `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// What the plugin offers (this kit offers the 1.0 operations).
    const CAPABILITIES: Capabilities = Capabilities::V1_0;

    /// Builds a provider from the plugin's settings (a JSON object). Runs on
    /// the plugin runtime; it must not block, but may await I/O.
    fn new(settings: serde_json::Value, ctx: Context) -> impl Future<Output = Result<Self, PluginError>> + Send;
}

/// What the host tells a plugin at construction, besides its settings.
#[derive(Clone, Debug)]
pub struct Context {
    /// Relative paths in the settings are relative to this directory.
    pub base_dir: PathBuf,
}

impl Context {
    /// Resolves a path from the settings against [`Context::base_dir`].
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }
}

/// The operations of a provider, as ordinary async Rust.
pub trait CredentialProvider: Send + Sync + 'static {
    /// Credentials for a registry, `None` when it needs none.
    fn registry_auth(
        &self,
        req: RegistryRequest,
    ) -> impl Future<Output = Result<Option<RegistryAuth>, PluginError>> + Send;

    /// Stores a project archive; all or nothing.
    fn upload(&self, req: Upload) -> impl Future<Output = Result<TransferResult, PluginError>> + Send;

    /// Fetches a project archive into the destination, verified.
    fn download(&self, req: Download) -> impl Future<Output = Result<TransferResult, PluginError>> + Send;

    /// The entries a build job needs.
    fn credentials(
        &self,
        req: CredentialsRequest,
    ) -> impl Future<Output = Result<Vec<CredentialEntry>, PluginError>> + Send;

    /// A cheap live probe.
    fn check(&self, req: CheckRequest) -> impl Future<Output = Result<CheckReport, PluginError>> + Send;
}

/// An upload, with the host's byte source turned into Rust types.
pub struct Upload {
    /// Object name (already validated by the host).
    pub name: String,
    /// The bytes.
    pub source: Source,
    /// Size in bytes when known in advance.
    pub size_hint: Option<u64>,
    /// Progress reporting (a no-op when the host did not ask for it).
    pub progress: ProgressHandle,
    /// Extra options.
    pub extra: HashMap<String, String>,
}

/// Where upload bytes come from.
pub enum Source {
    /// A local file; read it in parallel if that helps.
    Path(PathBuf),
    /// A host stream, as an `AsyncRead`.
    Stream(SourceReader),
}

/// A download, with the host's destination turned into Rust types.
pub struct Download {
    /// Bucket to read from.
    pub bucket: String,
    /// Object name.
    pub name: String,
    /// Where the bytes go.
    pub dest: Dest,
    /// Progress reporting (a no-op when the host did not ask for it).
    pub progress: ProgressHandle,
    /// Extra options.
    pub extra: HashMap<String, String>,
}

/// Where download bytes go.
pub enum Dest {
    /// Write the whole object to this file (create or truncate).
    Path(PathBuf),
    /// A host sink, as an `AsyncWrite`; call [`SinkWriter::finish`] once the
    /// object was written and verified.
    Sink(SinkWriter),
}

/// Reports transfer progress to the host; cheap to clone.
#[derive(Clone, Default)]
pub struct ProgressHandle(Option<Arc<ProgressBox>>);

impl ProgressHandle {
    /// Wraps the host's progress object, if it sent one.
    pub fn new(progress: Option<ProgressBox>) -> Self {
        Self(progress.map(Arc::new))
    }

    /// Sets the total size, once known.
    pub fn set_total(&self, total: u64) {
        if let Some(p) = &self.0 {
            p.set_total(total);
        }
    }

    /// Adds `bytes` transferred bytes.
    pub fn advance(&self, bytes: u64) {
        if let Some(p) = &self.0 {
            p.advance(bytes);
        }
    }

    /// Whether the host asked for progress.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The handle as a shareable callback, `None` when the host did not ask for progress.
    pub fn as_callback(&self) -> Option<Arc<dyn Fn(u64) + Send + Sync>> {
        let p = self.0.clone()?;
        Some(Arc::new(move |n| p.advance(n)))
    }
}

/// Deserializes a plugin's settings, turning errors into [`ErrorKind::CONFIG`]
/// errors that name the setting at fault (use `#[serde(deny_unknown_fields)]`
/// so that misspelt keys are reported rather than ignored).
pub fn parse_settings<T: serde::de::DeserializeOwned>(settings: serde_json::Value) -> Result<T, PluginError> {
    serde_path_to_error::deserialize(settings).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // The host prefixes the key (and its file and line); the message is the cause.
        let key = if path == "." { String::new() } else { path };
        PluginError::config(&key, inner)
    })
}

/// `error: cause: cause`, each layer once. Errors cross the boundary as
/// text, so a plugin folds the `source()` chain into the message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// An I/O error about a local file as a plugin error. An error that carries
/// the host's own error (a failing byte source or sink) passes it through.
pub fn io_error(what: &str, path: &std::path::Path, e: &io::Error) -> PluginError {
    if let Some(host) = host_error(e) {
        return host.clone();
    }
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NOT_FOUND,
        io::ErrorKind::PermissionDenied => ErrorKind::PERMISSION_DENIED,
        _ => ErrorKind::IO,
    };
    PluginError::new(kind, format!("{what} {}: {e}", path.display()))
}

/// Reads a secret from the environment variable named by setting `key`.
pub fn secret_from_env(key: &str, var: &str) -> Result<crate::Secret, PluginError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(crate::Secret::new(v)),
        Ok(_) => Err(PluginError::config(key, format!("environment variable {var} (named by `{key}`) is empty"))),
        Err(_) => Err(PluginError::config(key, format!("environment variable {var} (named by `{key}`) is not set"))),
    }
}

// ---------------------------------------------------------------------------
// Runtime and boundary guards

/// The plugin runtime of this process, with the process it was built in.
struct RuntimeSlot {
    pid: u32,
    runtime: tokio::runtime::Runtime,
}

/// The current slot. Slots are leaked, never freed: a runtime inherited
/// through `fork()` has lost its threads and cannot be shut down.
static RUNTIME: std::sync::atomic::AtomicPtr<RuntimeSlot> = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// The plugin's own runtime, built on first use in each process. Two
/// workers: plugins do I/O, not computation, and share the machine with the
/// host.
///
/// A process forked after the runtime was built (gunicorn and Celery
/// workers) gets a runtime of its own on its first call: the inherited one
/// has no threads left. No lock is taken, so a fork that happened while
/// another thread was in here cannot leave the child waiting for ever.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, PluginError> {
    use std::sync::atomic::Ordering;
    let pid = std::process::id();
    loop {
        let current = RUNTIME.load(Ordering::Acquire);
        // SAFETY: slots are created below from a leaked Box and never freed.
        if let Some(slot) = unsafe { current.as_ref() } {
            if slot.pid == pid {
                return Ok(&slot.runtime);
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .thread_name("credhost-plugin")
            .enable_all()
            .build()
            .map_err(|e| PluginError::new(ErrorKind::OTHER, format!("cannot start the plugin runtime: {e}")))?;
        if !current.is_null() {
            // A runtime of another process: this one was forked, and the
            // parent's operations never finish here.
            BUSY.store(0, std::sync::atomic::Ordering::SeqCst);
        }
        let fresh = Box::into_raw(Box::new(RuntimeSlot { pid, runtime }));
        match RUNTIME.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // The replaced slot (another process's) stays leaked.
            Ok(_) => {}
            Err(_) => {
                // Another thread installed one first; drop ours (it never ran a task).
                // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                let ours = unsafe { Box::from_raw(fresh) };
                ours.runtime.shutdown_background();
            }
        }
    }
}

/// A panic's message as it may be shown: its first line, URLs reduced to
/// scheme, host and path, at most 200 characters. (A panic message is
/// written by whoever panicked, for a developer: it may hold anything.)
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "unknown panic payload"
    };
    reduce_panic_text(text)
}

fn reduce_panic_text(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let line = crate::rules::scrub_urls(line);
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line
    }
}

fn panicked(what: &str, payload: &(dyn std::any::Any + Send)) -> PluginError {
    PluginError::new(ErrorKind::PANICKED, format!("plugin panicked in {what}: {}", panic_message(payload)))
}

/// Operation tasks still running (or being dropped after a cancellation)
/// and clean-up tasks: what [`wait_idle`] waits for. Connection pools and
/// other background tasks of the plugin's libraries are not counted: they
/// leave nothing behind.
static BUSY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts as busy from creation to drop.
struct Busy;

impl Busy {
    fn new() -> Self {
        BUSY.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Spawns clean-up work that must finish before the process may exit
/// (aborting a multipart upload, cancelling an upload session): the host
/// waits for it through `wait_idle`. Runs on the current runtime, else on
/// the plugin runtime.
pub fn spawn_cleanup<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let busy = Busy::new();
    let task = async move {
        let _busy = busy;
        fut.await;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
        }
        Err(_) => {
            if let Ok(rt) = runtime() {
                rt.spawn(task);
            }
        }
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `make()` (guarded against panics) to get a future, spawns it on the
/// plugin runtime and returns an FFI future awaiting it; dropping that future
/// aborts the task. Plumbing shared with plugin kits built on this crate.
#[doc(hidden)]
pub fn spawn_guarded<T, F, M>(what: &'static str, make: M) -> FfiFuture<PResult<T>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, PluginError>> + Send + 'static,
    M: FnOnce() -> F,
{
    let ready = |e: PluginError| async move { RResult::RErr(e) }.into_ffi();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return ready(e),
    };
    let fut = match catch_unwind(AssertUnwindSafe(make)) {
        Ok(f) => f,
        Err(p) => return ready(panicked(what, &*p)),
    };
    let busy = Busy::new();
    let mut task = AbortOnDrop(rt.spawn(async move {
        // Counted until the task's future is gone: completed, or dropped
        // after an abort (when its clean-up has been spawned).
        let _busy = busy;
        fut.await
    }));
    async move {
        match (&mut task.0).await {
            Ok(Ok(v)) => RResult::ROk(v),
            Ok(Err(e)) => RResult::RErr(e),
            Err(j) if j.is_panic() => RResult::RErr(panicked(what, &*j.into_panic())),
            Err(_) => RResult::RErr(PluginError::new(ErrorKind::CANCELLED, format!("{what} was cancelled"))),
        }
    }
    .into_ffi()
}

/// The ABI-facing provider wrapping a [`CredentialProvider`]. Used by
/// [`export_plugin!`](crate::export_plugin); not meant to be named directly.
#[doc(hidden)]
pub struct Adapter<P>(Arc<P>);

impl<P: CredentialProvider> Provider for Adapter<P> {
    fn registry_auth(&self, req: RegistryRequest) -> FfiFuture<PResult<abi_stable::std_types::ROption<RegistryAuth>>> {
        let p = self.0.clone();
        spawn_guarded("registry_auth", move || async move { p.registry_auth(req).await.map(Into::into) })
    }

    fn upload(&self, req: UploadRequest) -> FfiFuture<PResult<TransferResult>> {
        let p = self.0.clone();
        spawn_guarded("upload", move || async move {
            let source = match req.source {
                UploadSource::Path(p) => Source::Path(PathBuf::from(p.as_str())),
                UploadSource::Stream(s) => Source::Stream(SourceReader::new(s)),
            };
            let upload = Upload {
                name: req.name.into_string(),
                source,
                size_hint: req.size_hint.into_option(),
                progress: ProgressHandle(req.progress.into_option().map(Arc::new)),
                extra: extra_to_map(req.extra),
            };
            p.upload(upload).await
        })
    }

    fn download(&self, req: DownloadRequest) -> FfiFuture<PResult<TransferResult>> {
        let p = self.0.clone();
        spawn_guarded("download", move || async move {
            let dest = match req.dest {
                DownloadDest::Path(p) => Dest::Path(PathBuf::from(p.as_str())),
                DownloadDest::Sink(s) => Dest::Sink(SinkWriter::new(s)),
            };
            let download = Download {
                bucket: req.bucket.into_string(),
                name: req.name.into_string(),
                dest,
                progress: ProgressHandle(req.progress.into_option().map(Arc::new)),
                extra: extra_to_map(req.extra),
            };
            p.download(download).await
        })
    }

    fn credentials(&self, req: CredentialsRequest) -> FfiFuture<PResult<RVec<CredentialEntry>>> {
        let p = self.0.clone();
        spawn_guarded("credentials", move || async move { p.credentials(req).await.map(RVec::from) })
    }

    fn check(&self, req: CheckRequest) -> FfiFuture<PResult<CheckReport>> {
        let p = self.0.clone();
        spawn_guarded("check", move || async move { p.check(req).await })
    }

    fn wait_idle(&self) -> FfiFuture<PResult<()>> {
        wait_idle()
    }
}

/// The body of [`Provider::wait_idle`] for plugins on this runtime.
/// Plumbing shared with plugin kits built on this crate.
#[doc(hidden)]
pub fn wait_idle() -> FfiFuture<PResult<()>> {
    spawn_guarded("wait_idle", || async {
        // Operations cancelled by the host drop their state (and spawn their
        // clean-up) when their task is next polled; wait until only this
        // task is left.
        while BUSY.load(std::sync::atomic::Ordering::SeqCst) > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(())
    })
}

/// An `extra` map as a std map. Plumbing shared with plugin kits.
#[doc(hidden)]
pub fn extra_to_map(extra: Extra) -> HashMap<String, String> {
    extra.into_iter().map(|t| (t.0.into_string(), t.1.into_string())).collect()
}

/// The body of the exported `info` function.
#[doc(hidden)]
pub fn info_for<P: Plugin>() -> PluginInfo {
    PluginInfo {
        name: P::NAME.into(),
        version: P::VERSION.into(),
        api_version: API_VERSION.into(),
        capabilities: P::CAPABILITIES,
        extra: Extra::new(),
    }
}

/// The body of the exported `new_provider` function: parses the settings,
/// routes logs, and builds the provider on the plugin runtime.
#[doc(hidden)]
pub fn new_provider_for<P: Plugin>(settings_json: &str, host: HostServicesBox) -> PResult<crate::ProviderBox> {
    construct(P::NAME, settings_json, host, |settings, ctx| async move {
        P::new(settings, ctx).await.map(|p| Adapter(Arc::new(p)))
    })
}

/// Builds a provider: routes the plugin's logs to the host, parses the
/// settings JSON, runs `build` on the plugin runtime and boxes the result
/// for the host. Panics anywhere in it become [`ErrorKind::PANICKED`]
/// errors. Plumbing shared with plugin kits built on this crate.
#[doc(hidden)]
pub fn construct<T, F, Fut>(
    plugin: &'static str,
    settings_json: &str,
    host: HostServicesBox,
    build: F,
) -> PResult<crate::ProviderBox>
where
    T: Provider + 'static,
    F: FnOnce(serde_json::Value, Context) -> Fut,
    Fut: Future<Output = Result<T, PluginError>> + Send + 'static,
{
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<crate::ProviderBox, PluginError> {
        let ctx = Context { base_dir: PathBuf::from(host.base_dir().as_str()) };
        install_host_logging(plugin, host);
        let settings: serde_json::Value = serde_json::from_str(settings_json)
            .map_err(|e| PluginError::new(ErrorKind::CONFIG, format!("settings are not valid JSON: {e}")))?;
        let rt = runtime()?;
        let fut = build(settings, ctx);
        // The constructor may await I/O; run it on the plugin runtime from this
        // (host, synchronous) thread without blocking any async executor: the
        // host calls `new_provider` outside async code.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let built = match tokio::spawn(fut).await {
                Ok(r) => r,
                Err(j) if j.is_panic() => Err(panicked("new_provider", &*j.into_panic())),
                Err(_) => Err(PluginError::new(ErrorKind::CANCELLED, "plugin constructor was cancelled")),
            };
            let _ = tx.send(built);
        });
        let provider = rx
            .recv()
            .map_err(|_| PluginError::new(ErrorKind::OTHER, "the plugin runtime stopped during construction"))??;
        Ok(crate::Provider_TO::from_value(provider, abi_stable::sabi_trait::TD_Opaque))
    }));
    match result {
        Ok(Ok(p)) => RResult::ROk(p),
        Ok(Err(e)) => RResult::RErr(e),
        Err(p) => RResult::RErr(panicked("new_provider", &*p)),
    }
}

/// The value of [`keys::PANIC`](crate::keys::PANIC) for a plugin compiled
/// with `panic = "abort"` (`true`) or `"unwind"`.
#[doc(hidden)]
pub fn panic_strategy(aborts: bool) -> &'static str {
    if aborts {
        "abort"
    } else {
        "unwind"
    }
}

/// Exports a plugin type implementing [`Plugin`] as the library's root module.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs)]
        pub mod __credhost_export {
            #[allow(unused_imports)]
            use super::*;

            #[::abi_stable::sabi_extern_fn]
            fn plugin_info() -> $crate::PluginInfo {
                // `info_for` only copies constants; it cannot panic. The
                // panic strategy is read here, where the plugin is compiled.
                $crate::sdk::info_for::<$plugin>()
                    .with_extra($crate::keys::PANIC, $crate::sdk::panic_strategy(cfg!(panic = "abort")))
            }

            #[::abi_stable::sabi_extern_fn]
            fn new_provider(
                settings_json: ::abi_stable::std_types::RStr<'_>,
                host: $crate::HostServicesBox,
            ) -> $crate::PResult<$crate::ProviderBox> {
                $crate::sdk::new_provider_for::<$plugin>(settings_json.as_str(), host)
            }

            #[::abi_stable::export_root_module]
            pub fn root_module() -> $crate::PluginRoot_Ref {
                use ::abi_stable::prefix_type::PrefixTypeTrait as _;
                $crate::PluginRoot { info: plugin_info, new_provider }.leak_into_prefix()
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Log routing

struct HostLog {
    plugin: &'static str,
    host: HostServicesBox,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for HostLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let level = to_level(*meta.level());
        let mut text = MessageText(String::new());
        event.record(&mut text);
        let _ = self.plugin;
        self.host.log(level, meta.target().into(), text.0.as_str().into());
    }
}

fn to_level(level: tracing::Level) -> LogLevel {
    match level {
        tracing::Level::ERROR => LogLevel::ERROR,
        tracing::Level::WARN => LogLevel::WARN,
        tracing::Level::INFO => LogLevel::INFO,
        tracing::Level::DEBUG => LogLevel::DEBUG,
        _ => LogLevel::TRACE,
    }
}

struct MessageText(String);

impl tracing::field::Visit for MessageText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let sep = if self.0.is_empty() { "" } else { " " };
            let _ = write!(self.0, "{sep}{}={value:?}", field.name());
        }
    }
}

fn install_host_logging(plugin: &'static str, host: HostServicesBox) {
    use tracing_subscriber::{layer::SubscriberExt as _, Layer as _};
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let host = Arc::new(host);
        let panic_host = host.clone();
        // This library has its own copy of std, so this hook sees only the
        // plugin's panics: they go to the host log instead of stderr.
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let msg = format!("panic{location}: {}", panic_message(payload));
            panic_host.log(LogLevel::ERROR, "panic".into(), msg.as_str().into());
        }));
        let filter_host = host.clone();
        let dependencies = std::env::var(LOG_DEPENDENCIES_VAR).is_ok_and(|v| v == "1");
        // Asked per event, so a host that changes its log level (or sets up
        // logging after loading the plugin) is obeyed.
        let filter = tracing_subscriber::filter::DynFilterFn::new(move |meta, _cx| {
            let max = filter_host.max_log_level();
            let level = to_level(*meta.level());
            if level > LogLevel::INFO && !dependencies && is_transport(meta.target()) {
                return false;
            }
            max != LogLevel(0) && level <= max
        });
        let layer = HostLog { plugin, host: ArcHost(host).into_box() };
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter));
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Set to `1`, forwards the debug and trace records of the HTTP, TLS and
/// cloud-SDK libraries a plugin uses; without it they stay in the plugin.
/// Those records can hold credentials: request and response bodies (an ECR
/// authorization token), headers, signed URLs.
pub const LOG_DEPENDENCIES_VAR: &str = "CREDHOST_LOG_DEPENDENCIES";

/// Whether `target` is a module of a transport library (an HTTP client or
/// server, TLS, a cloud SDK's runtime).
fn is_transport(target: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "aws_smithy",
        "aws_sdk_",
        "aws_config",
        "aws_runtime",
        "aws_sigv4",
        "aws_credential_types",
        "aws_types",
        "hyper",
        "h2",
        "reqwest",
        "rustls",
        "tokio_rustls",
        "hyper_rustls",
        "tower",
        "http",
        "ring",
        "want",
    ];
    PREFIXES.iter().any(|p| target.starts_with(p))
}

/// Shares one host-services object between the log layer and the panic hook.
struct ArcHost(Arc<HostServicesBox>);

impl HostServices for ArcHost {
    fn max_log_level(&self) -> LogLevel {
        self.0.max_log_level()
    }
    fn base_dir(&self) -> RString {
        self.0.base_dir()
    }
    fn log(&self, level: LogLevel, target: abi_stable::std_types::RStr<'_>, message: abi_stable::std_types::RStr<'_>) {
        self.0.log(level, target, message)
    }
}

impl ArcHost {
    fn into_box(self) -> HostServicesBox {
        crate::HostServices_TO::from_value(self, abi_stable::sabi_trait::TD_Opaque)
    }
}

// ---------------------------------------------------------------------------
// Byte source and sink adapters

const CHUNK: usize = 1 << 20;

/// A host [`crate::ByteSource`] as a tokio `AsyncRead`. The host's blocking
/// reads run on a blocking thread, at most two chunks ahead of the reader.
pub struct SourceReader {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, PluginError>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl SourceReader {
    /// Adapts a host byte source; must be called on the plugin runtime.
    #[doc(hidden)]
    pub fn new(mut source: ByteSourceBox) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || loop {
            let mut chunk = vec![0u8; CHUNK];
            let sent = match source.read(chunk.as_mut_slice().into()) {
                RResult::ROk(0) => return,
                RResult::ROk(n) => {
                    chunk.truncate(n.min(CHUNK));
                    tx.blocking_send(Ok(chunk))
                }
                RResult::RErr(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if sent.is_err() {
                return; // the reader was dropped: stop reading
            }
        });
        Self { rx, chunk: Vec::new(), pos: 0 }
    }
}

impl AsyncRead for SourceReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pos >= this.chunk.len() {
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(chunk)) => {
                    this.chunk = chunk;
                    this.pos = 0;
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.chunk.len() - this.pos);
        buf.put_slice(&this.chunk[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

enum SinkMsg {
    Data(Vec<u8>),
    Finish(tokio::sync::oneshot::Sender<Result<(), PluginError>>),
}

/// A host [`crate::ByteSink`] as a tokio `AsyncWrite`; the host's blocking
/// writes run on a blocking thread. Dropping it without
/// [`SinkWriter::finish`] leaves the sink unfinished (incomplete).
pub struct SinkWriter {
    tx: tokio_util::sync::PollSender<SinkMsg>,
    failed: Arc<std::sync::Mutex<Option<PluginError>>>,
}

impl SinkWriter {
    /// Adapts a host byte sink; must be called on the plugin runtime.
    #[doc(hidden)]
    pub fn new(mut sink: ByteSinkBox) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SinkMsg>(2);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let failed_in_thread = failed.clone();
        tokio::task::spawn_blocking(move || {
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    SinkMsg::Data(d) => {
                        if let RResult::RErr(e) = sink.write(d.as_slice().into()) {
                            if let Ok(mut f) = failed_in_thread.lock() {
                                *f = Some(e);
                            }
                            return;
                        }
                    }
                    SinkMsg::Finish(done) => {
                        let _ = done.send(sink.finish().into_result());
                        return;
                    }
                }
            }
        });
        Self { tx: tokio_util::sync::PollSender::new(tx), failed }
    }

    fn sink_error(&self) -> io::Error {
        match self.failed.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => io::Error::other(e),
            None => io::Error::new(io::ErrorKind::BrokenPipe, "the host sink stopped accepting data"),
        }
    }

    /// Declares the object complete: every byte was written and verified.
    pub async fn finish(mut self) -> Result<(), PluginError> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let sender = self.tx.get_ref().cloned();
        self.tx.close();
        let Some(sender) = sender else {
            return Err(PluginError::new(ErrorKind::IO, "the host sink was closed before the download finished"));
        };
        if sender.send(SinkMsg::Finish(done_tx)).await.is_err() {
            return Err(to_plugin_error(self.sink_error()));
        }
        match done_rx.await {
            Ok(r) => r,
            Err(_) => Err(to_plugin_error(self.sink_error())),
        }
    }
}

fn to_plugin_error(e: io::Error) -> PluginError {
    match e.into_inner().map(|inner| inner.downcast::<PluginError>()) {
        Some(Ok(pe)) => *pe,
        Some(Err(other)) => PluginError::new(ErrorKind::IO, other.to_string()),
        None => PluginError::new(ErrorKind::IO, "host sink failed"),
    }
}

impl AsyncWrite for SinkWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.sink_error()));
        }
        let n = buf.len().min(CHUNK);
        if self.tx.send_item(SinkMsg::Data(buf[..n].to_vec())).is_err() {
            return Poll::Ready(Err(self.sink_error()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        // Completion is declared by `finish`, after verification.
        Poll::Ready(Ok(()))
    }
}

/// Converts an `io::Error` produced while reading a [`SourceReader`] or
/// writing a [`SinkWriter`] back into the host's error, when it carries one.
pub fn host_error(e: &io::Error) -> Option<&PluginError> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<PluginError>())
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<SourceReader>();
    is_send::<SinkWriter>();
    is_send::<RString>();
}
