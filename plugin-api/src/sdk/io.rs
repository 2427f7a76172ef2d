//! The host's byte streams as tokio types, and transfer progress.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context as TaskContext, Poll},
};

use abi_stable::std_types::{RResult, RString};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{ByteSinkBox, ByteSourceBox, ErrorKind, PluginError, ProgressBox};

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
