//! `credhost._credhost`: the Python package's native part, over the
//! `credhost` library. The public classes live in Python (`credhost`),
//! which turns these plain results into objects with redacted secrets.
//!
//! Fork safety: nothing starts at import or construction. The host runtime
//! is one per process (see `runtime`), and each `Core` keeps its provider
//! (or live host) in a slot tagged with the process that built it: a child
//! forked after the parent used the object builds fresh ones before its
//! first call, and leaks the parent's instead of dropping them.

mod errors;
mod reader;
mod runtime;

use std::{
    future::Future,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use credhost::{
    AuthForm, DownloadOptions, Host, LiveHost, PresignMethod, ProviderHandle, Registries, Revealed, UploadOptions,
    WatchOptions,
};
use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::runtime::ProcessLocal;

/// How often a blocking call looks for a pending signal (Ctrl-C), so that
/// a long transfer stays interruptible.
const SIGNAL_POLL: Duration = Duration::from_millis(200);

/// How often a transfer's progress callable is called while the count moves.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// How long an interrupted operation's clean-up (aborting a multipart
/// upload) may take before the call returns anyway.
const CLEANUP_WAIT: Duration = Duration::from_secs(10);
/// How long a stopped upload waits for the `read()` of its source that is
/// under way to return (a source blocked for longer is left to it).
const READ_WAIT: Duration = Duration::from_secs(5);

/// How a call ended when it did not finish.
enum Failure {
    Lib(credhost::Error),
    Py(PyErr),
    Cancelled,
    Runtime(String),
}

impl From<credhost::Error> for Failure {
    fn from(e: credhost::Error) -> Self {
        Failure::Lib(e)
    }
}

impl Failure {
    fn into_py(self, py: Python<'_>, what: &str) -> PyErr {
        match self {
            Failure::Lib(e) => errors::from_lib(py, &e),
            Failure::Py(e) => e,
            Failure::Cancelled => errors::cancelled(py, what),
            Failure::Runtime(m) => errors::internal(py, &m),
        }
    }
}

/// A cancellation signal for one call, set from another thread (the
/// asyncio wrappers set it when their task is cancelled).
#[pyclass(frozen, module = "credhost._credhost")]
#[derive(Default)]
struct CancelToken(CancellationToken);

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Asks the call using this token to stop; it raises `Cancelled`.
    fn cancel(&self) {
        self.0.cancel();
    }

    /// Whether `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// What a process built for one `Core`.
enum Backend {
    /// The active instance's provider, and registry routing that shares it.
    Fixed(ProviderHandle, Arc<Registries>),
    Live(Arc<LiveHost>),
}

impl Backend {
    fn provider(&self) -> ProviderHandle {
        match self {
            Backend::Fixed(p, _) => p.clone(),
            Backend::Live(live) => live.provider(),
        }
    }

    fn registries(&self) -> Arc<Registries> {
        match self {
            Backend::Fixed(_, r) => r.clone(),
            Backend::Live(live) => live.registries(),
        }
    }

    fn share(&self) -> Self {
        match self {
            Backend::Fixed(p, r) => Backend::Fixed(p.clone(), r.clone()),
            Backend::Live(l) => Backend::Live(l.clone()),
        }
    }
}

/// A library value as the Python classes are built from: the dict serde
/// makes of it, with secrets in clear (the classes wrap them in `Secret`).
fn to_py<T: serde::Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    Ok(pythonize::pythonize(py, &Revealed(value))?.unbind())
}

/// The per-process state of one `Core`: made lazily, guarded by an async
/// lock so that concurrent first calls build one provider.
#[derive(Default)]
struct Slot {
    backend: tokio::sync::Mutex<Option<Backend>>,
    /// For a fixed configuration: the registry routing, which owns the
    /// providers (the active one included), made without loading anything.
    registries: std::sync::OnceLock<Arc<Registries>>,
}

/// One configuration and, per process, its provider or live host.
#[pyclass(frozen, module = "credhost._credhost")]
struct Core {
    config_path: PathBuf,
    platform: Option<String>,
    /// The configuration as parsed at construction.
    host: Host,
    /// `Some` for a live host: how it watches the file.
    live: Option<WatchOptions>,
    /// Only locked while holding the GIL, for a moment: `os.fork()` also
    /// holds the GIL, so no fork can happen while another thread holds it.
    slot: Arc<Mutex<Option<Arc<ProcessLocal<Slot>>>>>,
    /// The caller's label in audit lines.
    label: Option<String>,
}

impl Core {
    /// This process's slot, made now if the current one is another
    /// process's (or there is none).
    fn slot(&self) -> Arc<ProcessLocal<Slot>> {
        let mut guard = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some(s) if s.is_current() => s.clone(),
            _ => {
                let fresh = Arc::new(ProcessLocal::new(Slot::default()));
                *guard = Some(fresh.clone());
                fresh
            }
        }
    }

    /// The registry routing of a fixed configuration in this process.
    fn fixed_registries(&self, slot: &Slot) -> Arc<Registries> {
        slot.registries.get_or_init(|| Arc::new(Registries::new(self.host.config().clone()))).clone()
    }

    /// The registry routing to answer a registry request with: a fixed
    /// configuration's needs no provider built first (the instance serving
    /// the host may not be the active one); a live host's is its current one.
    async fn registries(&self, slot: &Slot) -> credhost::Result<Arc<Registries>> {
        match &self.live {
            None => Ok(self.fixed_registries(slot)),
            Some(_) => Ok(self.backend(slot).await?.registries()),
        }
    }

    /// What to run one operation on: the cached provider, unless the
    /// plugin panicked in it (then a fresh one, as `LiveHost` does), or the
    /// live host's current one.
    async fn backend(&self, slot: &Slot) -> credhost::Result<Backend> {
        let mut guard = slot.backend.lock().await;
        match &*guard {
            Some(Backend::Fixed(p, _)) if p.is_failed() => {}
            Some(backend) => return Ok(backend.share()),
            None => {}
        }
        let built = match &self.live {
            Some(opts) => Backend::Live(Arc::new(
                LiveHost::watch(&self.config_path, self.platform.as_deref(), opts.clone()).await?,
            )),
            None => {
                let registries = self.fixed_registries(slot);
                Backend::Fixed(registries.provider(self.host.platform()).await?, registries)
            }
        };
        let handed = built.share();
        *guard = Some(built);
        Ok(handed)
    }

    /// Runs `op` on this process's provider with the GIL released, until it
    /// finishes, `cancel` is set, or a signal handler raises (Ctrl-C). An
    /// operation stopped that way is dropped, which cancels the plugin's
    /// task, and its clean-up gets a moment to finish.
    fn run<T, F, Fut>(&self, py: Python<'_>, what: &str, cancel: Option<&CancelToken>, op: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(Backend) -> Fut + Send,
        Fut: Future<Output = Result<T, Failure>> + Send,
    {
        self.run_reporting(py, what, cancel, None, op)
    }

    /// [`Core::run`] for a transfer: `progress` (a counter the plugin
    /// advances, and the Python callable told about it) is reported from
    /// this thread while the operation runs and once more when it succeeds.
    /// An exception raised by the callable stops the transfer as a
    /// cancellation does, and is raised in its place.
    fn run_reporting<T, F, Fut>(
        &self,
        py: Python<'_>,
        what: &str,
        cancel: Option<&CancelToken>,
        progress: Option<Reporter>,
        op: F,
    ) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(Backend) -> Fut + Send,
        Fut: Future<Output = Result<T, Failure>> + Send,
    {
        let slot = self.slot();
        let cancel = cancel.map(|c| c.0.clone()).unwrap_or_default();
        let outcome = py.detach(|| {
            let rt = runtime::get().map_err(|e| Failure::Runtime(format!("cannot start the host runtime: {e}")))?;
            rt.block_on(async {
                let backend = stoppable(&cancel, self.backend(&slot)).await??;
                let provider = backend.provider();
                let op = credhost::audit::labelled(self.label.as_deref(), op(backend));
                let stopped = match stoppable(&cancel, reporting(progress, op)).await {
                    Ok(Ok(done)) => return done,
                    Ok(Err(callback_raised)) => callback_raised,
                    Err(stopped) => stopped,
                };
                provider.wait_idle(CLEANUP_WAIT).await;
                Err(stopped)
            })
        });
        outcome.map_err(|f| f.into_py(py, what))
    }

    /// This process's live host, if it was started.
    fn running_live(&self) -> Option<Arc<LiveHost>> {
        match self.running_backend()? {
            Backend::Live(live) => Some(live),
            Backend::Fixed(..) => None,
        }
    }

    /// The backend of this process, if one was started (never starts one).
    fn running_backend(&self) -> Option<Backend> {
        let slot = self.slot();
        let backend = slot.backend.try_lock().ok()?;
        backend.as_ref().map(Backend::share)
    }

    /// Like [`Core::run`] for work that needs no provider.
    fn run_plain<T, Fut>(&self, py: Python<'_>, what: &str, fut: Fut) -> PyResult<T>
    where
        T: Send,
        Fut: Future<Output = Result<T, Failure>> + Send,
    {
        let cancel = CancellationToken::new();
        let outcome = py.detach(|| {
            let rt = runtime::get().map_err(|e| Failure::Runtime(format!("cannot start the host runtime: {e}")))?;
            rt.block_on(async { stoppable(&cancel, fut).await? })
        });
        outcome.map_err(|f| f.into_py(py, what))
    }
}

/// `fut`, unless `cancel` is set or a signal handler raises first.
async fn stoppable<T>(cancel: &CancellationToken, fut: impl Future<Output = T>) -> Result<T, Failure> {
    tokio::select! {
        biased;
        r = fut => Ok(r),
        () = cancel.cancelled() => Err(Failure::Cancelled),
        e = interrupted() => Err(Failure::Py(e)),
    }
}

/// A transfer's byte counts, advanced by the plugin (from its threads).
struct Counter {
    done: AtomicU64,
    /// `u64::MAX` while unknown.
    total: AtomicU64,
}

impl Counter {
    fn new() -> Arc<Self> {
        Arc::new(Self { done: AtomicU64::new(0), total: AtomicU64::new(u64::MAX) })
    }

    fn get(&self) -> (u64, Option<u64>) {
        let total = self.total.load(Ordering::Relaxed);
        (self.done.load(Ordering::Relaxed), (total != u64::MAX).then_some(total))
    }
}

impl credhost::Progress for Counter {
    fn set_total(&self, total: u64) {
        self.total.store(total.min(u64::MAX - 1), Ordering::Relaxed);
    }

    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Tells a Python callable `progress(done, total)` about a [`Counter`]:
/// only from the thread that waits for the transfer, with the GIL taken
/// there, and only when the figures changed.
struct Reporter {
    counter: Arc<Counter>,
    callback: Py<PyAny>,
    last: Option<(u64, Option<u64>)>,
}

impl Reporter {
    /// A reporter for `callback`, if there is one, and the counter to hand
    /// to the transfer.
    fn new(callback: Option<Py<PyAny>>) -> (Option<Self>, Option<Arc<dyn credhost::Progress>>) {
        match callback {
            Some(callback) => {
                let counter = Counter::new();
                let shared: Arc<dyn credhost::Progress> = counter.clone();
                (Some(Self { counter, callback, last: None }), Some(shared))
            }
            None => (None, None),
        }
    }

    /// The last report, after the transfer succeeded: its size is known now.
    fn finish(&mut self) -> Result<(), Failure> {
        let done = self.counter.done.load(Ordering::Relaxed);
        let _ = self.counter.total.compare_exchange(u64::MAX, done, Ordering::Relaxed, Ordering::Relaxed);
        self.report()
    }

    fn report(&mut self) -> Result<(), Failure> {
        let now = self.counter.get();
        if self.last == Some(now) {
            return Ok(());
        }
        self.last = Some(now);
        Python::attach(|py| self.callback.call1(py, now).map(drop)).map_err(Failure::Py)
    }
}

/// Runs `fut`, calling the reporter every [`PROGRESS_INTERVAL`] (the first
/// time at once) and once more when `fut` succeeded. `Err` when the
/// callable raised: `fut` is dropped then.
async fn reporting<T>(
    reporter: Option<Reporter>,
    fut: impl Future<Output = Result<T, Failure>>,
) -> Result<Result<T, Failure>, Failure> {
    let Some(mut reporter) = reporter else { return Ok(fut.await) };
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => {
                if out.is_ok() {
                    reporter.finish()?;
                }
                return Ok(out);
            }
            _ = tick.tick() => reporter.report()?,
        }
    }
}

/// Completes with the exception of a signal handler (KeyboardInterrupt for
/// Ctrl-C). Python runs handlers only on the main thread; elsewhere this
/// never completes.
async fn interrupted() -> PyErr {
    loop {
        tokio::time::sleep(SIGNAL_POLL).await;
        if let Some(Err(e)) = Python::try_attach(|py| py.check_signals()) {
            return e;
        }
    }
}

/// Registry credentials as the Python class takes them: the library's
/// fields and the `REGISTRY_TOKEN` form.
#[derive(serde::Serialize)]
struct PyRegistryAuth {
    #[serde(flatten)]
    auth: credhost::RegistryAuth,
    registry_token: credhost::Secret,
}

#[pymethods]
impl Core {
    /// Parses the configuration (`config`, else `$CREDHOST_CONFIG`, else
    /// `./plugins.toml`) and nothing more: plugins load on first use.
    #[new]
    #[pyo3(signature = (config=None, platform=None, live=false, interval=1.0))]
    fn new(
        py: Python<'_>,
        config: Option<PathBuf>,
        platform: Option<String>,
        live: bool,
        interval: f64,
    ) -> PyResult<Self> {
        let path = config
            .or_else(|| std::env::var_os("CREDHOST_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("plugins.toml"));
        // Relative paths in the file are relative to it: pin them now, so a
        // later chdir (daemons do) changes nothing.
        let path = std::path::absolute(&path).unwrap_or(path);
        let host = Host::from_file(&path, platform.as_deref()).map_err(|e| errors::from_lib(py, &e))?;
        let live = if live {
            if !(interval.is_finite() && interval > 0.0) {
                return Err(pyo3::exceptions::PyValueError::new_err("interval must be a positive number of seconds"));
            }
            let interval = Duration::try_from_secs_f64(interval)
                .map_err(|_| pyo3::exceptions::PyValueError::new_err("interval is out of range"))?;
            Some(WatchOptions { interval, ..WatchOptions::default() })
        } else {
            None
        };
        Ok(Self { config_path: path, platform, host, live, slot: Arc::new(Mutex::new(None)), label: None })
    }

    /// This core (sharing its providers, caches and live host) with `label`
    /// in the audit lines of its calls.
    fn labelled(&self, label: Option<String>) -> Self {
        Self {
            config_path: self.config_path.clone(),
            platform: self.platform.clone(),
            host: self.host.clone(),
            live: self.live.clone(),
            slot: self.slot.clone(),
            label,
        }
    }

    /// The configuration file.
    #[getter]
    fn config_path(&self) -> PathBuf {
        self.config_path.clone()
    }

    /// The active instance as configured at construction.
    #[getter]
    fn configured_platform(&self) -> String {
        self.host.platform().to_owned()
    }

    /// `None`, or the credentials as a dict (`server`, `username`,
    /// `password`, `expires_at`, `kind`, `registry_token`), from the
    /// instance that serves `registry` (the active one's own when `None`),
    /// routed as every credhost front end routes it; from the instance
    /// named at construction when one was.
    #[pyo3(signature = (registry=None, scope=None, cancel=None))]
    fn registry_auth(
        &self,
        py: Python<'_>,
        registry: Option<String>,
        scope: Option<String>,
        cancel: Option<PyRef<'_, CancelToken>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let slot = self.slot();
        let named = self.platform.is_some();
        let cancel = cancel.map(|c| c.0.clone()).unwrap_or_default();
        let outcome = py.detach(|| {
            let rt = runtime::get().map_err(|e| Failure::Runtime(format!("cannot start the host runtime: {e}")))?;
            rt.block_on(stoppable(
                &cancel,
                credhost::audit::labelled(self.label.as_deref(), async {
                    let registries = self.registries(&slot).await?;
                    let (registry, scope) = (registry.as_deref(), scope.as_deref());
                    let auth = if named {
                        // An instance named at construction answers itself, as
                        // `credhost --platform NAME token --registry HOST` does.
                        let platform = registries.config().platform.clone();
                        registries.provider(&platform).await?.registry_auth(registry, scope).await?
                    } else {
                        registries.auth(registry, scope, AuthForm::Any).await?
                    };
                    Ok::<_, Failure>(auth.map(|auth| {
                        let registry_token = auth.registry_token();
                        PyRegistryAuth { auth, registry_token }
                    }))
                }),
            ))?
        });
        let auth = outcome.map_err(|f| f.into_py(py, "registry credentials"))?;
        auth.map(|a| to_py(py, &a)).transpose()
    }

    /// Uploads a file (checked to be a ZIP archive unless `verify` is
    /// false); the stored object as a dict.
    #[pyo3(signature = (path, name, verify=true, cancel=None, progress=None, if_absent=false))]
    #[allow(clippy::too_many_arguments)]
    fn upload_path(
        &self,
        py: Python<'_>,
        path: PathBuf,
        name: String,
        verify: bool,
        cancel: Option<PyRef<'_, CancelToken>>,
        progress: Option<Py<PyAny>>,
        if_absent: bool,
    ) -> PyResult<Py<PyAny>> {
        let (reporter, progress) = Reporter::new(progress);
        let stored = self.run_reporting(py, "upload", cancel.as_deref(), reporter, |b| async move {
            let opts = UploadOptions { name: Some(name), no_verify: !verify, if_absent, progress };
            Ok(b.provider().upload_file(&path, &opts).await?)
        })?;
        to_py(py, &stored)
    }

    /// Uploads what `file.read(n)` returns until it returns nothing; the
    /// stored object as a dict.
    #[pyo3(signature = (file, name, size_hint=None, cancel=None, progress=None, if_absent=false))]
    #[allow(clippy::too_many_arguments)]
    fn upload_stream(
        &self,
        py: Python<'_>,
        file: Py<PyAny>,
        name: String,
        size_hint: Option<u64>,
        cancel: Option<PyRef<'_, CancelToken>>,
        progress: Option<Py<PyAny>>,
        if_absent: bool,
    ) -> PyResult<Py<PyAny>> {
        let (reader, raised, gate) = reader::PyReader::new(file);
        let (reporter, progress) = Reporter::new(progress);
        let done = self.run_reporting(py, "upload", cancel.as_deref(), reporter, |b| async move {
            let opts = UploadOptions { if_absent, progress, ..UploadOptions::default() };
            Ok(b.provider().upload_reader_with(&name, reader, size_hint, &opts).await?)
        });
        // A stopped upload's reading thread may still be in read(): no
        // thread of ours stays in Python once this call returns.
        py.detach(|| gate.close(READ_WAIT));
        // The source's own exception says more than the plugin's account of it.
        let source_error = raised.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (done, source_error) {
            (Err(_), Some(e)) => Err(e),
            (done, _) => to_py(py, &done?),
        }
    }

    /// Downloads `bucket`/`name` to `dest`, replacing it only with `force`;
    /// the object as a dict.
    #[pyo3(signature = (bucket, name, dest, force=false, cancel=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn download(
        &self,
        py: Python<'_>,
        bucket: String,
        name: String,
        dest: PathBuf,
        force: bool,
        cancel: Option<PyRef<'_, CancelToken>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let (reporter, progress) = Reporter::new(progress);
        let fetched = self.run_reporting(py, "download", cancel.as_deref(), reporter, |b| async move {
            let opts = DownloadOptions { force, progress };
            Ok(b.provider().download_to_path(&bucket, &name, &dest, &opts).await?)
        })?;
        to_py(py, &fetched)
    }

    /// The build job's entries: a list of dicts (`key`, `value`, `secret`).
    #[pyo3(signature = (cancel=None))]
    fn credentials(&self, py: Python<'_>, cancel: Option<PyRef<'_, CancelToken>>) -> PyResult<Py<PyAny>> {
        let entries =
            self.run(py, "credentials", cancel.as_deref(), |b| async move { Ok(b.provider().credentials().await?) })?;
        to_py(py, &entries)
    }

    /// The live probe: a dict with `items`, each `component`, `ok`, `detail`.
    #[pyo3(signature = (cancel=None))]
    fn check(&self, py: Python<'_>, cancel: Option<PyRef<'_, CancelToken>>) -> PyResult<Py<PyAny>> {
        let report = self.run(py, "check", cancel.as_deref(), |b| async move { Ok(b.provider().check().await?) })?;
        to_py(py, &report)
    }

    /// A dict: `method` (`GET` or `PUT`), `url`, `headers`, `expires_at`.
    #[pyo3(signature = (method, bucket, name, expires, cancel=None))]
    fn presign(
        &self,
        py: Python<'_>,
        method: &str,
        bucket: String,
        name: String,
        expires: f64,
        cancel: Option<PyRef<'_, CancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        let method: PresignMethod =
            method.parse().map_err(|why: String| errors::raise(py, "InvalidInput", "invalid_input", &why, false))?;
        let expires = Duration::try_from_secs_f64(expires).map_err(|_| {
            errors::raise(py, "InvalidInput", "invalid_input", "expires must be a positive number of seconds", false)
        })?;
        let signed = self.run(py, "presign", cancel.as_deref(), |b| async move {
            Ok(b.provider().presign(method, &bucket, &name, expires).await?)
        })?;
        to_py(py, &signed)
    }

    /// A build-job grant: a dict with `entries` (dicts `key`, `value`,
    /// `secret`), `expires_at`, `registry_scope` and `parts`.
    #[pyo3(signature = (bucket, name, repository=None, pull=Vec::new(), ttl=3600.0, with_keys=false, allow_unscoped_registry=false, session_name=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn grant(
        &self,
        py: Python<'_>,
        bucket: String,
        name: String,
        repository: Option<String>,
        pull: Vec<String>,
        ttl: f64,
        with_keys: bool,
        allow_unscoped_registry: bool,
        session_name: Option<String>,
        cancel: Option<PyRef<'_, CancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        let ttl = Duration::try_from_secs_f64(ttl).map_err(|_| {
            errors::raise(py, "InvalidInput", "invalid_input", "ttl must be a positive number of seconds", false)
        })?;
        let request = credhost::GrantRequest {
            repository,
            pull,
            ttl,
            with_keys,
            allow_unscoped_registry,
            session_name,
            ..credhost::GrantRequest::new(bucket, name)
        };
        let grant =
            self.run(py, "grant", cancel.as_deref(), |b| async move { Ok(b.provider().grant(&request).await?) })?;
        to_py(py, &grant)
    }

    /// Deletes `bucket`/`name` (succeeds when it does not exist).
    #[pyo3(signature = (bucket, name, cancel=None))]
    fn delete(
        &self,
        py: Python<'_>,
        bucket: String,
        name: String,
        cancel: Option<PyRef<'_, CancelToken>>,
    ) -> PyResult<()> {
        self.run(py, "delete", cancel.as_deref(), |b| async move { Ok(b.provider().delete(&bucket, &name).await?) })
    }

    /// Every configured instance and how its plugin file fared, plus the
    /// unconfigured plugin files of the plugin directory (never loaded).
    fn plugins(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let host = match &self.live {
            None => self.host.clone(),
            // What a live host serves, once it runs; before that the file as
            // it is now, without starting anything (a report must work when
            // the active plugin cannot load).
            Some(_) => match self.running_live() {
                Some(live) => Host::new((*live.config()).clone()),
                None => Host::from_file(&self.config_path, self.platform.as_deref())
                    .map_err(|e| errors::from_lib(py, &e))?,
            },
        };
        let running = self.running_backend().map(|b| b.provider());
        let rows = py.detach(move || host.plugin_report());
        let rows: Vec<_> = match running {
            Some(p) => rows.into_iter().map(|r| r.with_process(&p)).collect(),
            None => rows,
        };
        to_py(py, &rows)
    }

    /// For a live host: `(generation, platform, last_error, process)`; for
    /// a fixed one `(0, platform, None, process)`. `process` is a dict
    /// (`pid`, `crashes_in_a_row`, `last_exit`, `next_start_waits`) for an
    /// instance with `isolation = "process"` once it runs, else `None`.
    #[allow(clippy::type_complexity)]
    fn status(&self, py: Python<'_>) -> PyResult<(u64, String, Option<String>, Py<PyAny>)> {
        if self.live.is_none() {
            // Nothing is started to report: a provider that runs says how
            // its process is.
            let process = match self.running_backend() {
                Some(Backend::Fixed(p, _)) => p.process_state(),
                _ => None,
            };
            let process = match process {
                Some(state) => to_py(py, &state)?,
                None => py.None(),
            };
            return Ok((0, self.host.platform().to_owned(), None, process));
        }
        let slot = self.slot();
        let (generation, platform, last_error, process) = self.run_plain(py, "status", async {
            match self.backend(&slot).await? {
                Backend::Live(live) => {
                    let s = live.status();
                    Ok((s.generation, s.platform, s.last_error, s.process))
                }
                Backend::Fixed(p, _) => Ok((0, p.name().to_owned(), None, p.process_state())),
            }
        })?;
        let process = match process {
            Some(state) => to_py(py, &state)?,
            None => py.None(),
        };
        Ok((generation, platform, last_error, process))
    }

    /// For a live host: reads the file now and applies it; whether a new
    /// provider was swapped in. An error says why the change was rejected.
    fn reload(&self, py: Python<'_>) -> PyResult<bool> {
        if self.live.is_none() {
            return Ok(false);
        }
        let slot = self.slot();
        self.run_plain(py, "reload", async {
            match self.backend(&slot).await? {
                Backend::Live(live) => Ok(live.reload().await?),
                Backend::Fixed(..) => Ok(false),
            }
        })
    }

    /// Checks a project name as uploads and downloads do.
    #[staticmethod]
    fn validate_name(py: Python<'_>, name: &str) -> PyResult<()> {
        credhost::names::validate_name(name).map_err(|e| errors::from_lib(py, &e))
    }

    /// Whether this process built the provider (or live host) already.
    fn is_started(&self) -> bool {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().is_some_and(|s| s.is_current() && s.backend.try_lock().is_ok_and(|b| b.is_some()))
    }
}

/// The native part of the `credhost` package.
/// Makes `program args...` the runner of plugin processes
/// (`isolation = "process"`) started from this interpreter.
#[pyfunction]
fn _set_plugin_runner(program: PathBuf, args: Vec<String>) {
    credhost::isolation::set_runner(program, args.into_iter().map(Into::into).collect());
}

/// Opens every audit log file of this process again before its next line.
#[pyfunction]
fn _reopen_audit_log() {
    credhost::audit::reopen();
}

/// Serves a plugin process for the host that started this interpreter
/// (see `credhost._runner`); the exit status.
#[pyfunction]
fn _plugin_runner_main(py: Python<'_>) -> i32 {
    py.detach(credhost::isolation::runner_main)
}

#[pymodule]
fn _credhost(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<CancelToken>()?;
    m.add_function(wrap_pyfunction!(_set_plugin_runner, m)?)?;
    m.add_function(wrap_pyfunction!(_plugin_runner_main, m)?)?;
    m.add_function(wrap_pyfunction!(_reopen_audit_log, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
