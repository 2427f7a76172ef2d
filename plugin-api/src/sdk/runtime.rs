//! Each plugin library's own runtime, and the guards at the boundary: every
//! call runs as a task there, a panic becomes an error, and the host may
//! drop a call's future to cancel it.

use std::{
    collections::HashMap,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
};

use abi_stable::std_types::RResult;
use async_ffi::{FfiFuture, FutureExt as _};

use super::{logging::install_host_logging, Context, ProcessRuntime};
use crate::{ErrorKind, Extra, HostServicesBox, PResult, PluginError, Provider};

/// The plugin runtime of each process.
static RUNTIME: ProcessRuntime = ProcessRuntime::new();

/// The plugin's own runtime, built on first use in each process (again in
/// a child after a `fork()`, see [`ProcessRuntime`]). Two workers: plugins
/// do I/O, not computation, and share the machine with the host.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, PluginError> {
    let build = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .thread_name("credhost-plugin")
            .enable_all()
            .build()
            .map_err(|e| PluginError::new(ErrorKind::OTHER, format!("cannot start the plugin runtime: {e}")))
    };
    RUNTIME.get(build, |inherited| {
        if inherited {
            // This process was forked: the parent's operations never finish here.
            BUSY.store(0, std::sync::atomic::Ordering::SeqCst);
        }
    })
}

/// A panic's message as it may be shown: its first line, URLs reduced to
/// scheme, host and path, at most 200 characters. (A panic message is
/// written by whoever panicked, for a developer: it may hold anything.)
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
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
        // Absolute, so that a plugin's paths mean the same after it changes
        // directory (the host sends the configuration file's directory).
        let base_dir = PathBuf::from(host.base_dir().as_str());
        let ctx = Context { base_dir: std::path::absolute(&base_dir).unwrap_or(base_dir) };
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
