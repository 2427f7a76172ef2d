//! The host's tokio runtime, one per process, and values owned by one process.

use std::{
    mem::ManuallyDrop,
    sync::atomic::{AtomicPtr, Ordering},
};

/// A runtime together with the process that built it.
struct Slot {
    pid: u32,
    runtime: tokio::runtime::Runtime,
}

/// Slots are leaked: a runtime inherited through `fork()` has no threads in
/// the child, so shutting it down there would wait for ever.
static RUNTIME: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());

/// The host runtime of the current process, built on first use. A process
/// forked from one that had a runtime builds its own on its first call. No
/// lock is taken, so a fork that happened while another thread was in here
/// cannot leave the child waiting.
pub fn get() -> std::io::Result<&'static tokio::runtime::Runtime> {
    let pid = std::process::id();
    loop {
        let current = RUNTIME.load(Ordering::Acquire);
        // SAFETY: slots come from Box::into_raw below and are never freed.
        if let Some(slot) = unsafe { current.as_ref() } {
            if slot.pid == pid {
                return Ok(&slot.runtime);
            }
        }
        install_log_output();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("credhost-host")
            .enable_all()
            .build()?;
        let fresh = Box::into_raw(Box::new(Slot { pid, runtime }));
        if RUNTIME.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire).is_err() {
            // Another thread of this process won; ours never ran anything.
            // SAFETY: `fresh` came from Box::into_raw above and was never shared.
            let ours = unsafe { Box::from_raw(fresh) };
            ours.runtime.shutdown_background();
        }
    }
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
