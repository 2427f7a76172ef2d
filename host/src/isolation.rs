//! Process isolation (`isolation = "process"`): an instance's plugin runs in
//! a child process (`credhost-plugin-runner`), which vets and loads the file
//! exactly as the host does and serves the provider interface over a Unix
//! socket pair made before the child starts (no path on disk, no port). The
//! host sees the child as one more [`AnyProvider`]: deadlines, caching and
//! errors stay the host's, and whatever the plugin does to its process
//! (`abort()`, a crash, `exit()`) fails the calls in flight with kind
//! `unavailable`; the next call starts a new child.
//!
//! Messages are the interface's own types (their `serde` feature), as JSON
//! in length-prefixed frames. Bulk bytes are not sent this way: uploads and
//! downloads are not offered in this mode yet.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use abi_stable::std_types::{ROption, RResult, RVec};
use credhost_plugin_api::async_ffi::FutureExt as _;
use credhost_plugin_api::{
    CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, DeleteRequest, ErrorKind as PluginKind, FfiFuture,
    Grant, GrantRequest, PResult, PluginError, PluginInfo, PresignRequest, Presigned, RegistryAuth, RegistryRequest,
    WorkloadAuthRequest,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::UnixStream,
    sync::{mpsc, oneshot},
};

use crate::{config::Instance, provider::AnyProvider, Error, Result};

/// The protocol's version, checked in the handshake.
pub const PROTOCOL: u32 = 1;

/// The runner executable's name.
pub const RUNNER: &str = "credhost-plugin-runner";

/// The variable naming the runner executable, when it is not beside the
/// current one.
pub const RUNNER_ENV: &str = "CREDHOST_PLUGIN_RUNNER";

/// The variable telling the runner the host's log level (`warn`, `debug`,
/// ...), unless `CREDHOST_LOG` says otherwise.
pub const LOG_LEVEL_ENV: &str = "CREDHOST_RUNNER_LOG_LEVEL";

/// The descriptor the child finds its end of the socket pair at.
pub const CHILD_FD: i32 = 3;

/// The largest message: far above any answer (they carry no bulk bytes).
const MAX_FRAME: u32 = 16 << 20;

/// What the host tells the child first.
#[derive(Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The configuration file, read by the child as by the host.
    pub config: PathBuf,
    /// The instance to serve.
    pub instance: String,
}

/// The child's answer to [`Hello`].
#[derive(Serialize, Deserialize)]
pub enum Ready {
    /// The plugin is loaded and its provider built.
    Loaded {
        /// [`PROTOCOL`].
        protocol: u32,
        /// The plugin's self-description.
        info: PluginInfo,
        /// The interface minor it speaks.
        interface: String,
    },
    /// It could not be (the host's error, as text with its kind).
    Failed {
        /// [`crate::ErrorKind::name`] of the error.
        kind: String,
        /// Its text.
        message: String,
    },
}

/// A call, by the interface method it stands for.
#[derive(Serialize, Deserialize)]
pub enum Call {
    /// `registry_auth`.
    RegistryAuth(RegistryRequest),
    /// `credentials`.
    Credentials(CredentialsRequest),
    /// `check`.
    Check(CheckRequest),
    /// `presign`.
    Presign(PresignRequest),
    /// `delete`.
    Delete(DeleteRequest),
    /// `grant`.
    Grant(GrantRequest),
    /// `workload_registry_auth`.
    Workload(WorkloadAuthRequest),
    /// `wait_idle`.
    WaitIdle,
}

/// A frame from the host.
#[derive(Serialize, Deserialize)]
pub enum Request {
    /// Start call `id`.
    Call(u64, Box<Call>),
    /// Drop call `id` (its future), which cancels it in the plugin.
    Cancel(u64),
}

/// The answer to a call, by method.
#[derive(Serialize, Deserialize)]
pub enum Answer {
    /// `registry_auth`, `workload_registry_auth`.
    Auth(PResult<ROption<RegistryAuth>>),
    /// `credentials`.
    Entries(PResult<RVec<CredentialEntry>>),
    /// `check`.
    Report(PResult<CheckReport>),
    /// `presign`.
    Presigned(PResult<Presigned>),
    /// `delete`, `wait_idle`.
    Done(PResult<()>),
    /// `grant`.
    Grant(PResult<Grant>),
    /// The plugin's interface predates the method.
    Predates,
}

/// A frame from the child.
#[derive(Serialize, Deserialize)]
pub struct Response {
    /// The call answered.
    pub id: u64,
    /// Its answer.
    pub answer: Answer,
}

/// Writes one frame: a big-endian length, then the message as JSON.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, message: &impl Serialize) -> io::Result<()> {
    let body = zeroize::Zeroizing::new(serde_json::to_vec(message).map_err(io::Error::other)?);
    let len = u32::try_from(body.len()).ok().filter(|l| *l <= MAX_FRAME).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("a message of {} bytes is over the limit", body.len()))
    })?;
    w.write_u32(len).await?;
    w.write_all(&body).await?;
    w.flush().await
}

/// Reads one frame; `None` at the end of the stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<T>> {
    let len = match r.read_u32().await {
        Ok(len) => len,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a message of {len} bytes is over the limit")));
    }
    let mut body = zeroize::Zeroizing::new(vec![0u8; len as usize]);
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Where the runner is: `CREDHOST_PLUGIN_RUNNER`, else beside the current
/// executable (or one directory up), else on `PATH`.
pub fn runner_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(RUNNER_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| Error::Internal(format!("cannot find this executable: {e}")))?;
    // Beside it, or one directory up (cargo's test and example binaries sit
    // in a directory below the others), then on PATH.
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates =
        [dir.clone()].into_iter().chain(dir.parent().map(Path::to_path_buf)).chain(std::env::split_paths(&path));
    for d in candidates {
        let p = d.join(RUNNER);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Unsupported {
        instance: String::new(),
        op: "process isolation",
        why: format!(
            "{RUNNER} is neither beside {} nor on PATH, and {RUNNER_ENV} is not set: install it with credhost or name it",
            exe.display()
        ),
    })
}

/// Whether environment variable `name` is one `patterns` let through.
fn env_allowed(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

/// The interface minor as the host names it.
fn interface_of(text: &str) -> Option<&'static str> {
    ["1.0", "1.1", "1.2", "1.3"].into_iter().find(|m| *m == text)
}

/// One running child.
struct Conn {
    /// Frames to the child.
    out: mpsc::UnboundedSender<Request>,
    /// Calls waiting for their answer.
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>,
    /// Set once the child is gone: why.
    dead: Arc<Mutex<Option<String>>>,
    /// Set when the host stops the child (idle): its end is no news.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    pid: u32,
}

/// The host's side of an instance running in a child process.
pub(crate) struct ProcessProvider {
    instance: String,
    config: PathBuf,
    env: Option<Vec<String>>,
    handshake: Duration,
    runner: PathBuf,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next: AtomicU64,
    /// Crashes in a row, and when the last one was: the next start waits.
    crashes: Mutex<(u32, Option<Instant>)>,
    /// When the last call ended (or began), and calls in flight: a child
    /// idle for `idle` is stopped.
    used: Mutex<(Instant, usize)>,
    idle: Duration,
}

impl ProcessProvider {
    /// Starts the child for `instance` and waits for its handshake (at most
    /// the instance's `timeout`): the plugin's description and interface.
    pub(crate) async fn start(
        instance: &Instance,
        config: &Path,
        policy: crate::loader::Policy,
    ) -> Result<(Arc<ProcessProvider>, PluginInfo, &'static str)> {
        let runner = runner_path().map_err(|e| match e {
            Error::Unsupported { op, why, .. } => Error::Unsupported { instance: instance.name.clone(), op, why },
            other => other,
        })?;
        // It runs the plugin with the host's environment: vetted as a
        // plugin file is.
        crate::loader::vet_executable(&runner, policy)
            .map_err(|source| Error::Load { plugin: instance.plugin.clone(), source })?;
        let config = std::path::absolute(config).map_err(|e| Error::io("cannot resolve", config, e))?;
        let p = Arc::new(ProcessProvider {
            instance: instance.name.clone(),
            config,
            env: instance.env.clone(),
            handshake: instance.limits.call,
            runner,
            conn: tokio::sync::Mutex::new(None),
            next: AtomicU64::new(1),
            crashes: Mutex::new((0, None)),
            used: Mutex::new((Instant::now(), 0)),
            idle: instance.process_idle_timeout,
        });
        let (conn, info, interface) = p.spawn().await?;
        *p.conn.lock().await = Some(conn);
        // Stops the child once it has been idle long enough; ends with the
        // provider.
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            loop {
                let Some(p) = weak.upgrade() else { return };
                let (last, busy) = *p.used.lock().unwrap_or_else(|e| e.into_inner());
                let left = p.idle.saturating_sub(last.elapsed());
                if busy == 0 && left.is_zero() {
                    if let Some(conn) = p.conn.lock().await.take() {
                        tracing::debug!(target: "credhost::isolation", pid = conn.pid, "the plugin process was idle: stopped");
                        // Closing its channel ends the child (after its clean-up).
                        conn.stopping.store(true, Ordering::Release);
                        drop(conn);
                    }
                }
                let wait = if left.is_zero() { p.idle } else { left };
                drop(p);
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
            }
        });
        Ok((p, info, interface))
    }

    /// The child's pid, while one runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        let conn = self.conn.try_lock().ok()?;
        conn.as_ref().filter(|c| c.dead.lock().map(|d| d.is_none()).unwrap_or(false)).map(|c| c.pid)
    }

    fn died(&self, why: &str) -> PluginError {
        PluginError::new(PluginKind::UNAVAILABLE, format!("the plugin process for {} died: {why}", self.instance))
            .retryable(true)
    }

    /// Starts a child and shakes hands with it.
    async fn spawn(&self) -> Result<(Arc<Conn>, PluginInfo, &'static str)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::Internal(format!("cannot make a socket pair: {e}")))?;
        let theirs: OwnedFd = theirs.into();
        let their_fd = theirs.as_raw_fd();
        let mut cmd = tokio::process::Command::new(&self.runner);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
        if let Some(patterns) = &self.env {
            cmd.env_clear();
            for (k, v) in std::env::vars_os() {
                if k.to_str().is_some_and(|k| env_allowed(patterns, k) || k == "CREDHOST_LOG") {
                    cmd.env(k, v);
                }
            }
        }
        let level = tracing::level_filters::LevelFilter::current().to_string().to_lowercase();
        cmd.env(LOG_LEVEL_ENV, if level == "off" { "error".to_owned() } else { level });
        // SAFETY: between fork and exec only async-signal-safe calls:
        // dup2, fcntl and prctl on descriptors and flags of the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(their_fd, CHILD_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                let flags = libc::fcntl(CHILD_FD, libc::F_GETFD);
                if flags < 0 || libc::fcntl(CHILD_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| Error::io("cannot start the plugin runner", &self.runner, e))?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        ours.set_nonblocking(true).map_err(|e| Error::Internal(format!("socket: {e}")))?;
        let stream = UnixStream::from_std(ours).map_err(|e| Error::Internal(format!("socket: {e}")))?;
        let (mut rd, mut wr) = stream.into_split();
        let hello = Hello { protocol: PROTOCOL, config: self.config.clone(), instance: self.instance.clone() };
        let shake = async {
            write_frame(&mut wr, &hello).await?;
            read_frame::<_, Ready>(&mut rd).await
        };
        let ready = match tokio::time::timeout(self.handshake, shake).await {
            Err(_) => {
                let _ = child.start_kill();
                return Err(Error::Timeout { instance: self.instance.clone(), op: "init", after: self.handshake });
            }
            Ok(Ok(Some(ready))) => ready,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let why = exit_reason(child.wait().await.ok());
                return Err(self.start_failed(format!("the plugin process died while starting: {why}")));
            }
        };
        let (info, interface) = match ready {
            Ready::Loaded { protocol, info, interface } if protocol == PROTOCOL => {
                let Some(interface) = interface_of(&interface) else {
                    let _ = child.start_kill();
                    return Err(self.start_failed(format!("the runner speaks interface {interface}")));
                };
                (info, interface)
            }
            Ready::Loaded { protocol, .. } => {
                let _ = child.start_kill();
                return Err(self.start_failed(format!(
                    "{} speaks protocol {protocol}, this host {PROTOCOL}: install the runner of this credhost",
                    self.runner.display()
                )));
            }
            Ready::Failed { kind, message } => {
                let _ = child.wait().await;
                return Err(Error::Plugin {
                    instance: self.instance.clone(),
                    op: "init",
                    source: crate::error::PluginFailure::isolated(&kind, message),
                });
            }
        };
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>> = Arc::default();
        let dead: Arc<Mutex<Option<String>>> = Arc::default();
        let (out, mut frames) = mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if write_frame(&mut wr, &frame).await.is_err() {
                    break;
                }
            }
        });
        let stopping: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (pending2, dead2, stopping2) = (pending.clone(), dead.clone(), stopping.clone());
        tokio::spawn(async move {
            while let Ok(Some(r)) = read_frame::<_, Response>(&mut rd).await {
                let waiter = pending2.lock().unwrap_or_else(|p| p.into_inner()).remove(&r.id);
                if let Some(w) = waiter {
                    let _ = w.send(r.answer);
                }
            }
            // The child is gone (or talks nonsense): end it, say why.
            let _ = child.start_kill();
            let why = exit_reason(child.wait().await.ok());
            if stopping2.load(Ordering::Acquire) {
                tracing::debug!(target: "credhost::isolation", pid, "the plugin process ended: {why}");
            } else {
                tracing::warn!(target: "credhost::isolation", pid, "the plugin process ended: {why}");
            }
            *dead2.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            // Waiters see their sender dropped.
            pending2.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        tracing::debug!(target: "credhost::isolation", pid, instance = %self.instance, "plugin process started");
        Ok((Arc::new(Conn { out, pending, dead, stopping, pid }), info, interface))
    }

    fn start_failed(&self, why: String) -> Error {
        Error::Plugin {
            instance: self.instance.clone(),
            op: "init",
            source: crate::error::PluginFailure::from_api(&PluginError::new(PluginKind::UNAVAILABLE, why)),
        }
    }

    /// The running child, or a new one (one start at a time; after crashes
    /// in a row, a growing pause first).
    async fn conn(&self) -> std::result::Result<Arc<Conn>, PluginError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.dead.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                return Ok(c.clone());
            }
        }
        let pause = {
            let (n, last) = *self.crashes.lock().unwrap_or_else(|p| p.into_inner());
            let wanted = if n <= 1 { Duration::ZERO } else { Duration::from_millis(250 << (n - 2).min(6)) };
            last.map(|t| wanted.saturating_sub(t.elapsed())).unwrap_or_default()
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        match self.spawn().await {
            Ok((c, _, _)) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => Err(PluginError::new(PluginKind::UNAVAILABLE, e.to_string()).retryable(true)),
        }
    }

    /// Runs `call` in the child. Dropping the future cancels it there.
    async fn call(self: Arc<Self>, call: Call) -> std::result::Result<Answer, PluginError> {
        struct Busy<'a>(&'a Mutex<(Instant, usize)>);
        impl Drop for Busy<'_> {
            fn drop(&mut self) {
                let mut used = self.0.lock().unwrap_or_else(|p| p.into_inner());
                *used = (Instant::now(), used.1.saturating_sub(1));
            }
        }
        {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            *used = (Instant::now(), used.1 + 1);
        }
        let _busy = Busy(&self.used);
        let conn = self.conn().await?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        // The child may have died since it was looked up: its reader marks
        // it dead before it drops the waiters, so a waiter added after that
        // would wait for nothing.
        if let Some(why) = conn.dead.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(self.died(&why));
        }
        struct Cancel<'a>(&'a Conn, u64, bool);
        impl Drop for Cancel<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
                    let _ = self.0.out.send(Request::Cancel(self.1));
                }
            }
        }
        let mut guard = Cancel(&conn, id, false);
        if conn.out.send(Request::Call(id, Box::new(call))).is_err() {
            guard.2 = true;
            return Err(self.died("its channel closed"));
        }
        let answer = rx.await;
        guard.2 = true;
        match answer {
            Ok(a) => {
                *self.crashes.lock().unwrap_or_else(|p| p.into_inner()) = (0, None);
                Ok(a)
            }
            Err(_) => {
                let why = conn.dead.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let mut crashes = self.crashes.lock().unwrap_or_else(|p| p.into_inner());
                *crashes = (crashes.0 + 1, Some(Instant::now()));
                Err(self.died(why.as_deref().unwrap_or("its connection closed")))
            }
        }
    }
}

/// Why a child ended, as people say it: `SIGSEGV`, `exit status 0`.
fn exit_reason(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "unknown".into(),
        Some(s) => match (s.signal(), s.code()) {
            (Some(sig), _) => signal_name(sig),
            (None, Some(code)) => format!("exit status {code}"),
            _ => "unknown".into(),
        },
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

/// An answer of the wrong shape (a runner of another build).
fn mismatched() -> PluginError {
    PluginError::new(PluginKind::OTHER, "the plugin process answered another call's kind")
}

macro_rules! remote {
    ($p:expr, $call:expr, $variant:ident) => {{
        let p = $p.clone();
        async move {
            match p.call($call).await {
                Ok(Answer::$variant(r)) => r,
                Ok(Answer::Predates) => {
                    RResult::RErr(PluginError::unsupported("this operation (the plugin predates it)"))
                }
                Ok(_) => RResult::RErr(mismatched()),
                Err(e) => RResult::RErr(e),
            }
        }
        .into_ffi()
    }};
}

impl ProcessProvider {
    pub(crate) fn registry_auth(self: &Arc<Self>, req: RegistryRequest) -> FfiFuture<PResult<ROption<RegistryAuth>>> {
        remote!(self, Call::RegistryAuth(req), Auth)
    }
    pub(crate) fn workload_registry_auth(
        self: &Arc<Self>,
        req: WorkloadAuthRequest,
    ) -> FfiFuture<PResult<ROption<RegistryAuth>>> {
        remote!(self, Call::Workload(req), Auth)
    }
    pub(crate) fn credentials(self: &Arc<Self>, req: CredentialsRequest) -> FfiFuture<PResult<RVec<CredentialEntry>>> {
        remote!(self, Call::Credentials(req), Entries)
    }
    pub(crate) fn check(self: &Arc<Self>, req: CheckRequest) -> FfiFuture<PResult<CheckReport>> {
        remote!(self, Call::Check(req), Report)
    }
    pub(crate) fn presign(self: &Arc<Self>, req: PresignRequest) -> FfiFuture<PResult<Presigned>> {
        remote!(self, Call::Presign(req), Presigned)
    }
    pub(crate) fn delete(self: &Arc<Self>, req: DeleteRequest) -> FfiFuture<PResult<()>> {
        remote!(self, Call::Delete(req), Done)
    }
    pub(crate) fn grant(self: &Arc<Self>, req: GrantRequest) -> FfiFuture<PResult<Grant>> {
        remote!(self, Call::Grant(req), Grant)
    }
    pub(crate) fn wait_idle(self: &Arc<Self>) -> FfiFuture<PResult<()>> {
        let p = self.clone();
        async move {
            // No child, nothing to wait for.
            if p.pid().is_none() {
                return RResult::ROk(());
            }
            match p.call(Call::WaitIdle).await {
                Ok(Answer::Done(r)) => r,
                Ok(_) => RResult::RErr(mismatched()),
                Err(_) => RResult::ROk(()),
            }
        }
        .into_ffi()
    }
    /// Transfers carry bulk bytes, which this mode does not pass yet.
    pub(crate) fn transfer_unsupported<T: 'static>(what: &'static str) -> FfiFuture<PResult<T>> {
        async move {
            RResult::RErr(PluginError::new(
                PluginKind::UNSUPPORTED,
                format!(
                    "{what} are not offered with isolation = \"process\" yet: use isolation = \"in-process\" for this instance"
                ),
            ))
        }
        .into_ffi()
    }
}

// ---- the child -------------------------------------------------------------

/// The runner's main: serves one instance on descriptor [`CHILD_FD`] until
/// the host closes it. Returns the process's exit status.
pub fn runner_main() -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{RUNNER}: cannot start a runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(serve())
}

async fn serve() -> i32 {
    // SAFETY: descriptor 3 was set up by the host for this process alone.
    let std = unsafe { <std::os::unix::net::UnixStream as std::os::fd::FromRawFd>::from_raw_fd(CHILD_FD) };
    if std.set_nonblocking(true).is_err() {
        eprintln!("{RUNNER}: descriptor {CHILD_FD} is not the host's socket (this program is started by credhost)");
        return 2;
    }
    let Ok(stream) = UnixStream::from_std(std) else {
        eprintln!("{RUNNER}: descriptor {CHILD_FD} is not the host's socket (this program is started by credhost)");
        return 2;
    };
    let (mut rd, mut wr) = stream.into_split();
    let hello: Hello = match read_frame(&mut rd).await {
        Ok(Some(h)) => h,
        _ => {
            eprintln!("{RUNNER}: no handshake from the host (this program is started by credhost)");
            return 2;
        }
    };
    let failed = |e: Error| Ready::Failed { kind: e.kind().name().to_owned(), message: e.to_string() };
    let built = async {
        if hello.protocol != PROTOCOL {
            return Err(Error::Internal(format!(
                "the host speaks protocol {}, this runner {PROTOCOL}",
                hello.protocol
            )));
        }
        let config = crate::config::Config::load(&hello.config, None)?;
        let host = crate::Host::new(config);
        host.construct(&hello.instance).await
    };
    let (provider, ready) = match built.await {
        Ok((info, interface, provider)) => {
            let ready = Ready::Loaded { protocol: PROTOCOL, info, interface: interface.to_owned() };
            (Arc::new(provider), ready)
        }
        Err(e) => {
            let _ = write_frame(&mut wr, &failed(e)).await;
            return 0;
        }
    };
    if write_frame(&mut wr, &ready).await.is_err() {
        return 0;
    }
    let (out, mut answers) = mpsc::unbounded_channel::<Response>();
    tokio::spawn(async move {
        while let Some(r) = answers.recv().await {
            if write_frame(&mut wr, &r).await.is_err() {
                break;
            }
        }
    });
    let running: Arc<Mutex<HashMap<u64, tokio::task::AbortHandle>>> = Arc::default();
    while let Ok(Some(request)) = read_frame::<_, Request>(&mut rd).await {
        match request {
            Request::Cancel(id) => {
                if let Some(task) = running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    task.abort();
                }
            }
            Request::Call(id, call) => {
                let (provider, out, running2) = (provider.clone(), out.clone(), running.clone());
                let task = tokio::spawn(async move {
                    let answer = answer(&provider, *call).await;
                    running2.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    let _ = out.send(Response { id, answer });
                });
                running.lock().unwrap_or_else(|p| p.into_inner()).insert(id, task.abort_handle());
            }
        }
    }
    // The host is gone or done: let cancelled work finish its clean-up.
    let _ = tokio::time::timeout(Duration::from_secs(30), provider.wait_idle()).await;
    0
}

/// Awaits a plugin's future; a panic in it becomes the answer the host
/// gives for one in-process (kind `panicked`).
async fn guarded<T>(fut: FfiFuture<PResult<T>>) -> PResult<T> {
    match crate::guard::Guarded(Some(fut)).await {
        Ok(r) => r,
        Err(crate::guard::Panicked) => {
            RResult::RErr(PluginError::new(PluginKind::PANICKED, "the plugin panicked (its future reported a panic)"))
        }
    }
}

async fn answer(p: &AnyProvider, call: Call) -> Answer {
    match call {
        Call::RegistryAuth(r) => Answer::Auth(guarded(p.registry_auth(r)).await),
        Call::Credentials(r) => Answer::Entries(guarded(p.credentials(r)).await),
        Call::Check(r) => Answer::Report(guarded(p.check(r)).await),
        Call::Presign(r) => match p.presign(r) {
            Some(f) => Answer::Presigned(guarded(f).await),
            None => Answer::Predates,
        },
        Call::Delete(r) => match p.delete(r) {
            Some(f) => Answer::Done(guarded(f).await),
            None => Answer::Predates,
        },
        Call::Grant(r) => match p.grant(r) {
            Some(f) => Answer::Grant(guarded(f).await),
            None => Answer::Predates,
        },
        Call::Workload(r) => match p.workload_registry_auth(r) {
            Some(f) => Answer::Auth(guarded(f).await),
            None => Answer::Predates,
        },
        Call::WaitIdle => Answer::Done(guarded(p.wait_idle()).await),
    }
}
