//! Bulk bytes of a plugin in a child process, which never go through the
//! message channel: a file (an upload's source, a download's destination)
//! is handed to the child as an open descriptor (`SCM_RIGHTS` on a
//! datagram socket of its own), and a stream of the host's (a request
//! body, a Python file-like) goes through a socket pair, in chunks, with
//! the writer blocked while the child does not read (backpressure).
//!
//! A stream is a sequence of chunks, each a big-endian `u32` length and
//! that many bytes. Length 0 ends it; [`FAILED`] says the host's source
//! failed and is followed by one frame holding the error (length, JSON),
//! which the plugin gets as its read's error. A stream that stops without
//! either (the host gave up) is an error too, never a shorter upload.

use std::{
    collections::HashMap,
    io::{self, IoSlice, IoSliceMut, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use abi_stable::std_types::{RResult, RSliceMut};
use credhost_plugin_api::{ByteSource, ByteSourceBox, ErrorKind as PluginKind, PResult, PluginError, Progress};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::{io::Interest, net::UnixDatagram, sync::Notify};

use super::{FromChild, ProgressEvent};

/// The length that marks a failed source.
const FAILED: u32 = u32::MAX;

/// The size of the chunks a stream is read and sent in.
const CHUNK: usize = 256 << 10;

/// At most this many descriptors travel with one call.
const MAX_FDS: usize = 4;

/// Sends `fds` for call `id` on the descriptor socket. The call's frame
/// follows on the message channel, so the child finds them waiting.
pub(super) async fn send_fds(sock: &UnixDatagram, id: u64, fds: &[OwnedFd]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let body = id.to_be_bytes();
    sock.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(&body)];
        let rights = [ControlMessage::ScmRights(&raw)];
        sendmsg::<()>(sock.as_raw_fd(), &iov, &rights, MsgFlags::MSG_NOSIGNAL, None).map_err(io::Error::from)
    })
    .await
    .map(drop)
}

/// How long descriptors wait for their call: those of a call cancelled
/// before it took them are closed after this.
const UNCLAIMED: Duration = Duration::from_secs(120);

/// The child's table of descriptors received for calls not yet started.
#[derive(Default)]
pub(super) struct Received {
    fds: Mutex<HashMap<u64, (Instant, Vec<OwnedFd>)>>,
    arrived: Notify,
}

impl Received {
    /// Receives descriptors until the host closes the socket.
    pub(super) async fn serve(self: Arc<Self>, sock: UnixDatagram) {
        loop {
            let got = sock
                .async_io(Interest::READABLE, || {
                    let mut body = [0u8; 8];
                    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
                    let mut iov = [IoSliceMut::new(&mut body)];
                    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
                        .map_err(io::Error::from)?;
                    let mut fds = Vec::new();
                    for c in msg.cmsgs().map_err(io::Error::from)? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: the kernel just installed these
                            // descriptors in this process; nothing else
                            // owns them.
                            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                        }
                    }
                    let n = msg.bytes;
                    Ok((n, body, fds))
                })
                .await;
            match got {
                Ok((8, body, fds)) => {
                    let mut table = self.fds.lock().unwrap_or_else(|p| p.into_inner());
                    table.retain(|_, (at, _)| at.elapsed() < UNCLAIMED);
                    table.insert(u64::from_be_bytes(body), (Instant::now(), fds));
                    drop(table);
                    self.arrived.notify_waiters();
                }
                Ok((0, ..)) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }

    /// Closes what came for call `id` (cancelled) and was not taken.
    pub(super) fn forget(&self, id: u64) {
        self.fds.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// The descriptors of call `id` (sent before its frame: a short wait
    /// at most).
    pub(super) async fn take(&self, id: u64) -> Option<Vec<OwnedFd>> {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if let Some((_, fds)) = self.fds.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    return fds;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.ok()
    }
}

/// The path a plugin in the child opens a descriptor it was handed by.
pub(super) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Writes all of `buf` to a stream socket without raising SIGPIPE when the
/// other end is gone (an error instead).
fn send_all(sock: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::sys::socket::send(sock.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// How long a stopped pump waits for the child to let go of the stream.
const LET_GO: Duration = Duration::from_secs(60);

/// The host's side of a streamed upload: reads `source` (a blocking
/// reader, on this blocking thread) and sends it in chunks until it ends,
/// fails, or the child stops reading. Once `stop` is set (the call was
/// dropped) it sends nothing more but keeps its end open until the child
/// closes its own, after its operation was cancelled: an end seen first
/// would race the cancellation (the plugin's failure path against its
/// clean-up).
pub(super) fn pump(mut source: ByteSourceBox, sock: UnixStream, stop: Arc<std::sync::atomic::AtomicBool>) {
    let stopped = |sock: &UnixStream| {
        let _ = sock.set_read_timeout(Some(LET_GO));
        let _ = (&*sock).read(&mut [0u8; 1]);
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        if stop.load(Ordering::Acquire) {
            return stopped(&sock);
        }
        let sent = match source.read(RSliceMut::from_mut_slice(&mut buf)) {
            _ if stop.load(Ordering::Acquire) => return stopped(&sock),
            RResult::ROk(0) => {
                let _ = send_all(&sock, &0u32.to_be_bytes());
                return;
            }
            RResult::ROk(n) => {
                let n = n.min(CHUNK);
                send_all(&sock, &(n as u32).to_be_bytes()).and_then(|()| send_all(&sock, &buf[..n]))
            }
            RResult::RErr(e) => {
                let body = serde_json::to_vec(&e).unwrap_or_default();
                let _ = send_all(&sock, &FAILED.to_be_bytes())
                    .and_then(|()| send_all(&sock, &(body.len() as u32).to_be_bytes()))
                    .and_then(|()| send_all(&sock, &body));
                return;
            }
        };
        if sent.is_err() {
            // The child stopped reading (its upload ended or was cancelled).
            return;
        }
    }
}

/// The child's side of a streamed upload: the plugin's [`ByteSource`].
pub(super) struct StreamSource {
    sock: UnixStream,
    /// Bytes left of the current chunk.
    left: usize,
    ended: bool,
}

impl StreamSource {
    pub(super) fn new(fd: OwnedFd) -> Self {
        Self { sock: UnixStream::from(fd), left: 0, ended: false }
    }

    fn early_end() -> PluginError {
        PluginError::new(PluginKind::IO, "reading the upload source: the host's stream ended before its end")
    }

    fn header(&mut self) -> Result<u32, PluginError> {
        let mut len = [0u8; 4];
        self.sock.read_exact(&mut len).map_err(|_| Self::early_end())?;
        Ok(u32::from_be_bytes(len))
    }
}

impl ByteSource for StreamSource {
    fn read(&mut self, mut buf: RSliceMut<'_, u8>) -> PResult<usize> {
        let buf = buf.as_mut_slice();
        if self.ended || buf.is_empty() {
            return RResult::ROk(0);
        }
        while self.left == 0 {
            match self.header() {
                Err(e) => return RResult::RErr(e),
                Ok(0) => {
                    self.ended = true;
                    return RResult::ROk(0);
                }
                Ok(FAILED) => {
                    let error = self.header().and_then(|len| {
                        let mut body = vec![0u8; len.min(1 << 20) as usize];
                        self.sock.read_exact(&mut body).map_err(|_| Self::early_end())?;
                        serde_json::from_slice::<PluginError>(&body).map_err(|_| Self::early_end())
                    });
                    self.ended = true;
                    return RResult::RErr(error.unwrap_or_else(|e| e));
                }
                Ok(n) => self.left = n as usize,
            }
        }
        let want = self.left.min(buf.len());
        loop {
            match self.sock.read(&mut buf[..want]) {
                Ok(0) => return RResult::RErr(Self::early_end()),
                Ok(n) => {
                    self.left -= n;
                    return RResult::ROk(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return RResult::RErr(Self::early_end()),
            }
        }
    }
}

/// The child's progress receiver for one call: reports go to the host as
/// frames, advances gathered to one frame per 100 ms (or 64 MiB): each
/// frame wakes both processes, which a fast transfer on a small machine
/// feels at one per MiB.
pub(super) struct RemoteProgress {
    id: u64,
    out: tokio::sync::mpsc::UnboundedSender<FromChild>,
    pending: AtomicU64,
    sent: Mutex<Instant>,
}

/// Advances gathered before a frame goes out, at most.
const GATHER: u64 = 64 << 20;

impl RemoteProgress {
    pub(super) fn new(id: u64, out: tokio::sync::mpsc::UnboundedSender<FromChild>) -> Arc<Self> {
        Arc::new(Self { id, out, pending: AtomicU64::new(0), sent: Mutex::new(Instant::now()) })
    }

    /// Sends what was gathered (before the call's answer, so the host has
    /// every byte counted when the call returns).
    pub(super) fn flush(&self) {
        let n = self.pending.swap(0, Ordering::AcqRel);
        if n > 0 {
            let _ = self.out.send(FromChild::Progress(self.id, ProgressEvent::Advance(n)));
        }
        *self.sent.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

/// [`RemoteProgress`] as the plugin's [`Progress`] object.
pub(super) struct SharedProgress(pub(super) Arc<RemoteProgress>);

impl Progress for SharedProgress {
    fn set_total(&self, total: u64) {
        let _ = self.0.out.send(FromChild::Progress(self.0.id, ProgressEvent::Total(total)));
    }
    fn advance(&self, bytes: u64) {
        let pending = self.0.pending.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let due = self.0.sent.lock().map(|t| t.elapsed() >= Duration::from_millis(100)).unwrap_or(true);
        if pending >= GATHER || due {
            self.0.flush();
        }
    }
}

/// Stops a streamed upload's pump when its call is dropped.
pub(super) struct StopOnDrop(pub(super) Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The child's side: `fut`, the plugin's operation, then its stream
/// socket shut, in that order however the call ends: dropped, the
/// operation is cancelled before its reader sees the end, and a pump on
/// the host blocked sending gets an error.
pub(super) struct ThenShut<F> {
    fut: Option<std::pin::Pin<Box<F>>>,
    sock: Option<UnixStream>,
}

impl<F> ThenShut<F> {
    pub(super) fn new(fut: F, sock: Option<UnixStream>) -> Self {
        Self { fut: Some(Box::pin(fut)), sock }
    }
}

impl<F: std::future::Future> std::future::Future for ThenShut<F> {
    type Output = F::Output;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        match self.fut.as_mut() {
            Some(fut) => fut.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        }
    }
}

impl<F> Drop for ThenShut<F> {
    fn drop(&mut self) {
        drop(self.fut.take());
        if let Some(s) = self.sock.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `source` to its end or error: the bytes, and the error.
    fn drain(mut source: StreamSource) -> (Vec<u8>, Option<PluginError>) {
        let (mut got, mut buf) = (Vec::new(), vec![0u8; 7]);
        loop {
            match source.read(RSliceMut::from_mut_slice(&mut buf)) {
                RResult::ROk(0) => return (got, None),
                RResult::ROk(n) => got.extend_from_slice(&buf[..n]),
                RResult::RErr(e) => return (got, Some(e)),
            }
        }
    }

    fn pair() -> (UnixStream, StreamSource) {
        let (host, child) = UnixStream::pair().unwrap();
        (host, StreamSource::new(child.into()))
    }

    #[test]
    fn a_stream_ends_only_at_its_end_marker() {
        let (host, source) = pair();
        send_all(&host, &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 2, b'd', b'e', 0, 0, 0, 0]).unwrap();
        let (got, error) = drain(source);
        assert_eq!(got, b"abcde");
        assert!(error.is_none(), "{error:?}");
    }

    #[test]
    fn a_stream_that_stops_early_is_an_error_never_a_shorter_upload() {
        for sent in [&[0u8, 0, 0, 3, b'a', b'b', b'c'][..], &[0, 0, 0, 9, b'a'], &[0, 0]] {
            let (host, source) = pair();
            send_all(&host, sent).unwrap();
            drop(host);
            let (_, error) = drain(source);
            let error = error.expect("an error");
            assert!(error.message.contains("ended before its end"), "{sent:?}: {error:?}");
        }
    }

    #[test]
    fn a_failed_source_reaches_the_plugin_as_its_error() {
        let (host, source) = pair();
        let failing = failing_source();
        std::thread::spawn(move || pump(failing, host, Arc::default()));
        let (got, error) = drain(source);
        assert_eq!(got, b"xy");
        let error = error.expect("the source's error");
        assert_eq!((error.kind, error.message.as_str()), (PluginKind::IO, "the client went away"));
    }

    /// A source that gives `xy`, then fails.
    fn failing_source() -> ByteSourceBox {
        struct Failing(u8);
        impl ByteSource for Failing {
            fn read(&mut self, mut buf: RSliceMut<'_, u8>) -> PResult<usize> {
                self.0 += 1;
                match self.0 {
                    1 => {
                        buf.as_mut_slice()[..2].copy_from_slice(b"xy");
                        RResult::ROk(2)
                    }
                    _ => RResult::RErr(PluginError::new(PluginKind::IO, "the client went away")),
                }
            }
        }
        credhost_plugin_api::ByteSource_TO::from_value(Failing(0), abi_stable::sabi_trait::TD_Opaque)
    }
}
