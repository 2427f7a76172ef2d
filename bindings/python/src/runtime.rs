//! The host's tokio runtime, one per process, and values owned by one process.

use std::mem::ManuallyDrop;

use credhost_plugin_api::sdk::ProcessRuntime;

/// The host runtime of each process.
static RUNTIME: ProcessRuntime = ProcessRuntime::new();

/// The host runtime of the current process, built on first use; a process
/// forked from one that had a runtime builds its own on its first call (see
/// [`ProcessRuntime`]).
pub fn get() -> std::io::Result<&'static tokio::runtime::Runtime> {
    let build = || {
        install_log_output();
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("credhost-host").enable_all().build()
    };
    RUNTIME.get(build, |_| {})
}

/// `CREDHOST_LOG` (a tracing filter such as `debug`) sends the library's
/// and the plugins' logs to standard error, as for the command line.
/// Without it the library stays silent.
fn install_log_output() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(filter) = std::env::var("CREDHOST_LOG") else { return };
        let Ok(filter) = tracing_subscriber::EnvFilter::try_new(filter) else { return };
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    });
}

/// A value made by this process. Dropped in another process (a child
/// forked after it was made), it is leaked instead: its threads, sockets
/// and runtime handles belong to the parent, and dropping them in the child
/// could wait on locks that no thread there will ever release.
pub struct ProcessLocal<T> {
    pid: u32,
    value: ManuallyDrop<T>,
}

impl<T> ProcessLocal<T> {
    pub fn new(value: T) -> Self {
        Self { pid: std::process::id(), value: ManuallyDrop::new(value) }
    }

    /// Whether the value was made by the current process.
    pub fn is_current(&self) -> bool {
        self.pid == std::process::id()
    }
}

impl<T> std::ops::Deref for ProcessLocal<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for ProcessLocal<T> {
    fn drop(&mut self) {
        if self.is_current() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
    }
}
