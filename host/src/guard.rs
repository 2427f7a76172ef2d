//! What stands between the host and a plugin's future: a guard that turns
//! a panic reported by its poll into an error, and the watch that sees a
//! transfer make progress (every report of the plugin, every read of a
//! streamed source), which the idle deadline of transfers is measured by.

use std::{
    future::Future,
    io::Read,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RSliceMut},
};
use credhost_plugin_api::{ByteSource, ErrorKind as PluginKind, PResult, PluginError, ProgressBox, Progress_TO};

use crate::provider::Progress;

/// Watches a transfer for progress: every report of the plugin (and every
/// read of a streamed source) counts, and is passed on to the caller's
/// progress receiver.
#[derive(Clone)]
pub(crate) struct Watch(Arc<WatchInner>);

struct WatchInner {
    started: Instant,
    /// Milliseconds after `started` of the latest sign of progress.
    last: AtomicU64,
    forward: Option<Arc<dyn Progress>>,
}

impl Watch {
    pub(crate) fn new(forward: Option<Arc<dyn Progress>>) -> Self {
        Self(Arc::new(WatchInner { started: Instant::now(), last: AtomicU64::new(0), forward }))
    }

    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing moved for `idle`.
    pub(crate) async fn stalled(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.0.last.load(Ordering::Relaxed));
            let quiet = self.0.started.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep((idle - quiet).min(Duration::from_secs(1))).await;
        }
    }

    pub(crate) fn progress_box(&self) -> ROption<ProgressBox> {
        ROption::RSome(Progress_TO::from_value(self.clone(), TD_Opaque))
    }
}

impl credhost_plugin_api::Progress for Watch {
    fn set_total(&self, total: u64) {
        self.touch();
        if let Some(p) = &self.0.forward {
            p.set_total(total);
        }
    }
    fn advance(&self, bytes: u64) {
        self.touch();
        if let Some(p) = &self.0.forward {
            p.advance(bytes);
        }
    }
}

/// A plugin future whose poll may report a panic (a plugin not built with
/// the kit): async-ffi raises it again in the host, where it is caught
/// here. The future is then leaked rather than dropped: its state is
/// unknown, and its drop could panic again (which would abort).
pub(crate) struct Guarded<F>(pub(crate) Option<F>);

/// The plugin's future panicked.
pub(crate) struct Panicked;

impl<F: Future + Unpin> Future for Guarded<F> {
    type Output = std::result::Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.0.as_mut() else { return Poll::Ready(Err(Panicked)) };
        let polled = quiet_panics(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(fut).poll(cx))));
        match polled {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                std::mem::forget(payload);
                if let Some(f) = self.0.take() {
                    std::mem::forget(f);
                }
                Poll::Ready(Err(Panicked))
            }
        }
    }
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the panic message of a caught plugin panic kept off
/// standard error (the error says what happened). Installs, once, a panic
/// hook that defers to the one in place for every other panic.
fn quiet_panics<R>(f: impl FnOnce() -> R) -> R {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = f();
    QUIET.with(|q| q.set(false));
    r
}

/// A `std::io::Read` as a plugin byte source; every read counts as progress.
pub(crate) struct ReadSource<R> {
    pub(crate) reader: R,
    pub(crate) watch: Watch,
}

impl<R: Read + Send> ByteSource for ReadSource<R> {
    fn read(&mut self, mut buf: RSliceMut<'_, u8>) -> PResult<usize> {
        loop {
            match self.reader.read(buf.as_mut_slice()) {
                Ok(n) => {
                    self.watch.touch();
                    return PResult::ROk(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return PResult::RErr(PluginError::new(PluginKind::IO, format!("reading the upload source: {e}")))
                }
            }
        }
    }
}
