//! A tokio runtime per process, for code that can find itself in a child
//! after `fork()`: the runtime every plugin library owns, and a host
//! embedded in a forking server (the Python package under gunicorn or
//! Celery).

use std::sync::atomic::{AtomicPtr, Ordering};

/// A runtime together with the process that built it.
struct Slot {
    pid: u32,
    runtime: tokio::runtime::Runtime,
}

/// A tokio runtime built on first use in each process: a process forked
/// from one that had built it builds its own on its first call, because the
/// inherited one has no threads left.
///
/// Runtimes are leaked, never shut down: one inherited through a fork
/// cannot be. No lock is taken, so a fork that happened while another
/// thread was in here cannot leave the child waiting for ever.
pub struct ProcessRuntime {
    current: AtomicPtr<Slot>,
}

impl ProcessRuntime {
    /// No runtime yet: one is built on the first [`ProcessRuntime::get`].
    pub const fn new() -> Self {
        Self { current: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// The runtime of the calling process, built by `build` when there is
    /// none yet; when two threads build at once, one runtime wins and the
    /// other, which never ran anything, is dropped. `installed` runs once
    /// the winner is in place, told whether it replaced a runtime of the
    /// process this one was forked from (whose work never finishes here).
    pub fn get<E>(
        &'static self,
        build: impl Fn() -> Result<tokio::runtime::Runtime, E>,
        installed: impl FnOnce(bool),
    ) -> Result<&'static tokio::runtime::Runtime, E> {
        let pid = std::process::id();
        loop {
            let current = self.current.load(Ordering::Acquire);
            // SAFETY: slots come from Box::into_raw below and are never freed.
            if let Some(slot) = unsafe { current.as_ref() } {
                if slot.pid == pid {
                    return Ok(&slot.runtime);
                }
            }
            let runtime = build()?;
            let fresh = Box::into_raw(Box::new(Slot { pid, runtime }));
            match self.current.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: `fresh` was installed and is never freed.
                    let slot = unsafe { &*fresh };
                    installed(!current.is_null());
                    return Ok(&slot.runtime);
                }
                Err(_) => {
                    // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                    let ours = unsafe { Box::from_raw(fresh) };
                    ours.runtime.shutdown_background();
                }
            }
        }
    }
}

impl Default for ProcessRuntime {
    fn default() -> Self {
        Self::new()
    }
}
