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
//! in length-prefixed frames. Bulk bytes are not sent this way (see
//! [`bulk`]): files go to the child as descriptors, streams through a
//! socket pair of their own; progress comes back as frames.

mod bulk;

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

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RVec},
};
use credhost_plugin_api::async_ffi::FutureExt as _;
use credhost_plugin_api::{
    ByteSource_TO, CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, DeleteRequest, DownloadDest,
    DownloadRequest, ErrorKind as PluginKind, Extra, FfiFuture, Grant, GrantRequest, PResult, PluginError, PluginInfo,
    PresignRequest, Presigned, ProgressBox, Progress_TO, RegistryAuth, RegistryRequest, TransferResult, UploadRequest,
    UploadSource, WorkloadAuthRequest,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{UnixDatagram, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::{config::Instance, provider::AnyProvider, Error, Result};

/// The protocol's version, checked in the handshake.
pub const PROTOCOL: u32 = 2;

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

/// The descriptor the child receives files and streams on (a datagram
/// socket pair's end).
pub const CHILD_FDS_FD: i32 = 4;

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
    /// Only vet and load the file, say what it is and end (for a report):
    /// no provider is built.
    #[serde(default)]
    pub describe: bool,
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
    /// `upload`: its source comes as a descriptor (a file, or a stream's
    /// socket).
    Upload(UploadCall),
    /// `download` to a file, which comes as a descriptor.
    Download(DownloadCall),
}

/// An [`UploadRequest`] without its bytes and progress receiver.
#[derive(Serialize, Deserialize)]
pub struct UploadCall {
    /// [`UploadRequest::name`].
    pub name: String,
    /// Whether the descriptor is a stream (else a file).
    pub stream: bool,
    /// [`UploadRequest::size_hint`].
    pub size_hint: Option<u64>,
    /// [`UploadRequest::extra`].
    pub extra: Extra,
    /// What the source is called in messages (the file's path).
    pub shown: String,
}

/// A [`DownloadRequest`] to a file, without the file and progress
/// receiver: the descriptor is the file's directory (the host's private
/// temporary one), in which the plugin creates `file` as in-process.
#[derive(Serialize, Deserialize)]
pub struct DownloadCall {
    /// [`DownloadRequest::bucket`].
    pub bucket: String,
    /// [`DownloadRequest::name`].
    pub name: String,
    /// [`DownloadRequest::extra`].
    pub extra: Extra,
    /// The file's name in the directory.
    pub file: String,
    /// What the directory is called in messages (its path).
    pub shown: String,
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
    /// `upload`, `download`.
    Transferred(PResult<TransferResult>),
    /// The plugin's interface predates the method.
    Predates,
}

/// A call's answer.
#[derive(Serialize, Deserialize)]
pub struct Response {
    /// The call answered.
    pub id: u64,
    /// Its answer.
    pub answer: Answer,
}

/// A transfer's progress, as the plugin reported it.
#[derive(Serialize, Deserialize)]
pub enum ProgressEvent {
    /// `Progress::set_total`.
    Total(u64),
    /// `Progress::advance` (several gathered).
    Advance(u64),
}

/// A frame from the child.
#[derive(Serialize, Deserialize)]
pub enum FromChild {
    /// A call's answer.
    Answer(Box<Response>),
    /// Progress of call `.0`; every report comes before the call's answer.
    Progress(u64, ProgressEvent),
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

/// The runner an embedding set with [`set_runner`].
static RUNNER_SET: Mutex<Option<(PathBuf, Vec<std::ffi::OsString>)>> = Mutex::new(None);

/// Makes `program` with `args` the runner of this process's plugin
/// processes (unless `CREDHOST_PLUGIN_RUNNER` names one): for an embedding
/// whose executable is not credhost's, such as the Python package, which
/// runs [`runner_main`] in its interpreter. `program` is vetted as a plugin
/// file is before each start.
pub fn set_runner(program: PathBuf, args: Vec<std::ffi::OsString>) {
    *RUNNER_SET.lock().unwrap_or_else(|p| p.into_inner()) = Some((program, args));
}

/// The runner to start, with its arguments: `CREDHOST_PLUGIN_RUNNER`, else
/// the one [`set_runner`] named, else [`runner_path`].
fn runner_command() -> Result<(PathBuf, Vec<std::ffi::OsString>)> {
    if std::env::var_os(RUNNER_ENV).is_some_and(|p| !p.is_empty()) {
        return runner_path().map(|p| (p, Vec::new()));
    }
    if let Some(set) = RUNNER_SET.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return Ok(set);
    }
    runner_path().map(|p| (p, Vec::new()))
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
    /// The progress receivers of transfers under way.
    progress: Arc<Mutex<HashMap<u64, ProgressBox>>>,
    /// Descriptors to the child.
    fds: UnixDatagram,
    /// Set once the child is gone: why.
    dead: Arc<Mutex<Option<String>>>,
    /// Set when the host stops the child (idle): its end is no news.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Told once the child has ended and was reaped.
    ended: Arc<tokio::sync::Notify>,
    pid: u32,
}

/// The host's side of an instance running in a child process.
pub(crate) struct ProcessProvider {
    instance: String,
    config: PathBuf,
    env: Option<Vec<String>>,
    handshake: Duration,
    runner: PathBuf,
    runner_args: Vec<std::ffi::OsString>,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next: AtomicU64,
    /// Crashes in a row, and when the last one was: the next start waits.
    crashes: Mutex<(u32, Option<Instant>)>,
    /// How the last child that failed a call ended.
    last_exit: Mutex<Option<String>>,
    /// When the last call ended (or began), and calls in flight: a child
    /// idle for `idle` is stopped.
    used: Mutex<(Instant, usize)>,
    idle: Duration,
    /// `RLIMIT_DATA` of the child, in bytes.
    memory: Option<u64>,
}

impl ProcessProvider {
    /// Starts the child for `instance` and waits for its handshake (at most
    /// the instance's `timeout`): the plugin's description and interface.
    pub(crate) async fn start(
        instance: &Instance,
        config: &Path,
        policy: crate::loader::Policy,
    ) -> Result<(Arc<ProcessProvider>, PluginInfo, &'static str)> {
        let p = Arc::new(Self::new(instance, config, policy)?);
        let (conn, info, interface) = p.spawn(false).await?;
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

    /// What instance's plugin file is, vetted and loaded in a child that
    /// builds no provider and ends once it has said (a library whose
    /// loading crashes ends that child, not the caller).
    pub(crate) async fn describe(
        instance: &Instance,
        config: &Path,
        policy: crate::loader::Policy,
    ) -> Result<(PluginInfo, &'static str)> {
        let p = Self::new(instance, config, policy)?;
        let (conn, info, interface) = p.spawn(true).await?;
        conn.stopping.store(true, Ordering::Release);
        Ok((info, interface))
    }

    fn new(instance: &Instance, config: &Path, policy: crate::loader::Policy) -> Result<ProcessProvider> {
        let (runner, runner_args) = runner_command().map_err(|e| match e {
            Error::Unsupported { op, why, .. } => Error::Unsupported { instance: instance.name.clone(), op, why },
            other => other,
        })?;
        // It runs the plugin with the host's environment: vetted as a
        // plugin file is.
        crate::loader::vet_executable(&runner, policy)
            .map_err(|source| Error::Load { plugin: instance.plugin.clone(), source })?;
        let config = std::path::absolute(config).map_err(|e| Error::io("cannot resolve", config, e))?;
        Ok(ProcessProvider {
            instance: instance.name.clone(),
            config,
            env: instance.env.clone(),
            handshake: instance.limits.call,
            runner,
            runner_args,
            conn: tokio::sync::Mutex::new(None),
            next: AtomicU64::new(1),
            crashes: Mutex::new((0, None)),
            last_exit: Mutex::new(None),
            used: Mutex::new((Instant::now(), 0)),
            idle: instance.process_idle_timeout,
            memory: instance.process_memory_limit,
        })
    }

    /// Stops the child, if one runs, and waits (at most `within`) until it
    /// has ended and was reaped; the next call starts a new one.
    pub(crate) async fn stop(&self, within: Duration) -> bool {
        let Some(conn) = self.conn.lock().await.take() else { return true };
        conn.stopping.store(true, Ordering::Release);
        let ended = conn.ended.clone();
        let dead = conn.dead.clone();
        // Its channel closes with the last sender: the child sees the end,
        // finishes its clean-up and exits.
        drop(conn);
        let wait = async {
            loop {
                let notified = ended.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if dead.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// The child's pid, while one runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        let conn = self.conn.try_lock().ok()?;
        conn.as_ref().filter(|c| c.dead.lock().map(|d| d.is_none()).unwrap_or(false)).map(|c| c.pid)
    }

    fn died(&self, why: &str) -> PluginError {
        let (n, _) = *self.crashes.lock().unwrap_or_else(|p| p.into_inner());
        let pause = Self::pause_after(n + 1);
        let again = if pause.is_zero() {
            String::new()
        } else {
            format!(" ({} times in a row; the next start waits {:.2} s)", n + 1, pause.as_secs_f64())
        };
        PluginError::new(
            PluginKind::UNAVAILABLE,
            format!("the plugin process for {} died: {why}{again}", self.instance),
        )
        .retryable(true)
    }

    /// The pause before a start after `n` crashes in a row.
    fn pause_after(n: u32) -> Duration {
        if n <= 1 {
            Duration::ZERO
        } else {
            Duration::from_millis(250 << (n - 2).min(6))
        }
    }

    /// The child's state: its pid, and its crashes in a row.
    pub(crate) fn state(&self) -> crate::ProcessState {
        let (n, last) = *self.crashes.lock().unwrap_or_else(|p| p.into_inner());
        let waits = last.map(|t| Self::pause_after(n).saturating_sub(t.elapsed())).filter(|d| !d.is_zero());
        let last_exit = self.last_exit.lock().unwrap_or_else(|p| p.into_inner()).clone();
        crate::ProcessState { pid: self.pid(), crashes_in_a_row: n, last_exit, next_start_waits: waits }
    }

    /// Starts a child and shakes hands with it (`describe`: a child that
    /// only says what the file is).
    async fn spawn(&self, describe: bool) -> Result<(Arc<Conn>, PluginInfo, &'static str)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::Internal(format!("cannot make a socket pair: {e}")))?;
        let theirs: OwnedFd = theirs.into();
        let their_fd = theirs.as_raw_fd();
        let (fds, their_fds) = std::os::unix::net::UnixDatagram::pair()
            .map_err(|e| Error::Internal(format!("cannot make a socket pair: {e}")))?;
        let their_fds: OwnedFd = their_fds.into();
        let their_fds_fd = their_fds.as_raw_fd();
        let memory = self.memory;
        let mut cmd = tokio::process::Command::new(&self.runner);
        cmd.args(&self.runner_args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
        if let Some(patterns) = &self.env {
            cmd.env_clear();
            for (k, v) in std::env::vars_os() {
                if k.to_str().is_some_and(|k| env_allowed(patterns, k) || k == "CREDHOST_LOG") {
                    cmd.env(k, v);
                }
            }
        }
        // The audit log's key is the host's: a plugin holding it and the log
        // could test guesses of the secrets the log hashes.
        for var in crate::audit::hidden_from_plugins() {
            cmd.env_remove(var);
        }
        let level = tracing::level_filters::LevelFilter::current().to_string().to_lowercase();
        cmd.env(LOG_LEVEL_ENV, if level == "off" { "error".to_owned() } else { level });
        // SAFETY: between fork and exec only async-signal-safe calls:
        // fcntl, dup2 and prctl on descriptors and flags of the child.
        unsafe {
            cmd.pre_exec(move || {
                // Both ends first moved above 3 and 4 (closed at exec), so
                // neither is overwritten by the other's dup2; dup2 leaves
                // the copies open across exec.
                let high = [
                    libc::fcntl(their_fd, libc::F_DUPFD_CLOEXEC, 10),
                    libc::fcntl(their_fds_fd, libc::F_DUPFD_CLOEXEC, 10),
                ];
                if high.iter().any(|fd| *fd < 0)
                    || libc::dup2(high[0], CHILD_FD) < 0
                    || libc::dup2(high[1], CHILD_FDS_FD) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                if let Some(bytes) = memory {
                    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                    if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // A process group of its own: a terminal's Ctrl-C or hang-up
                // reaches the host, which cancels the child's work and lets
                // it clean up, instead of killing the child mid-way.
                if libc::setpgid(0, 0) != 0 {
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
        // Started from one of the runtime's own threads: the parent-death
        // signal follows the thread that started the child, and a caller's
        // thread (one of a Python thread pool, say) may end long before
        // the host does.
        let spawned = tokio::spawn(async move { cmd.spawn() })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("the starting task failed: {e}"))));
        let mut child = spawned.map_err(|e| Error::io("cannot start the plugin runner", &self.runner, e))?;
        drop((theirs, their_fds));
        let pid = child.id().unwrap_or(0);
        let sockets = ours.set_nonblocking(true).and_then(|()| fds.set_nonblocking(true));
        sockets.map_err(|e| Error::Internal(format!("socket: {e}")))?;
        let stream = UnixStream::from_std(ours).map_err(|e| Error::Internal(format!("socket: {e}")))?;
        let fds = UnixDatagram::from_std(fds).map_err(|e| Error::Internal(format!("socket: {e}")))?;
        let (mut rd, mut wr) = stream.into_split();
        let hello =
            Hello { protocol: PROTOCOL, config: self.config.clone(), instance: self.instance.clone(), describe };
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
        let progress: Arc<Mutex<HashMap<u64, ProgressBox>>> = Arc::default();
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
        let ended: Arc<tokio::sync::Notify> = Arc::default();
        let (pending2, progress2, dead2, stopping2, ended2) =
            (pending.clone(), progress.clone(), dead.clone(), stopping.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok(Some(frame)) = read_frame::<_, FromChild>(&mut rd).await {
                match frame {
                    FromChild::Answer(r) => {
                        let Response { id, answer } = *r;
                        let waiter = pending2.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(answer);
                        }
                    }
                    FromChild::Progress(id, event) => {
                        if let Some(p) = progress2.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
                            match event {
                                ProgressEvent::Total(n) => p.set_total(n),
                                ProgressEvent::Advance(n) => p.advance(n),
                            }
                        }
                    }
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
            progress2.lock().unwrap_or_else(|p| p.into_inner()).clear();
            ended2.notify_waiters();
        });
        tracing::debug!(target: "credhost::isolation", pid, instance = %self.instance, "plugin process started");
        Ok((Arc::new(Conn { out, pending, progress, fds, dead, stopping, ended, pid }), info, interface))
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
            last.map(|t| Self::pause_after(n).saturating_sub(t.elapsed())).unwrap_or_default()
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        match self.spawn(false).await {
            Ok((c, _, _)) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => Err(PluginError::new(PluginKind::UNAVAILABLE, e.to_string()).retryable(true)),
        }
    }

    /// Runs `call` in the child. Dropping the future cancels it there.
    async fn call(self: Arc<Self>, call: Call) -> std::result::Result<Answer, PluginError> {
        self.call_with(call, Vec::new(), None).await
    }

    /// Runs `call` in the child, handing it `fds` and passing its progress
    /// reports to `progress`.
    async fn call_with(
        self: Arc<Self>,
        call: Call,
        fds: Vec<OwnedFd>,
        progress: Option<ProgressBox>,
    ) -> std::result::Result<Answer, PluginError> {
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
                self.0.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
                if !self.2 {
                    self.0.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
                    let _ = self.0.out.send(Request::Cancel(self.1));
                }
            }
        }
        if let Some(p) = progress {
            conn.progress.lock().unwrap_or_else(|p| p.into_inner()).insert(id, p);
        }
        let mut guard = Cancel(&conn, id, false);
        if !fds.is_empty() {
            if let Err(e) = bulk::send_fds(&conn.fds, id, &fds).await {
                guard.2 = true;
                conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                return Err(self.died(&format!("its descriptor channel failed: {e}")));
            }
            // The child holds its copies now.
            drop(fds);
        }
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
                let why = why.unwrap_or_else(|| "its connection closed".into());
                let error = self.died(&why);
                *self.last_exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                let mut crashes = self.crashes.lock().unwrap_or_else(|p| p.into_inner());
                *crashes = (crashes.0 + 1, Some(Instant::now()));
                Err(error)
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
    /// An upload: a file source goes to the child as an open descriptor,
    /// a stream through a socket pair fed by a blocking thread here.
    pub(crate) fn upload(self: &Arc<Self>, req: UploadRequest) -> FfiFuture<PResult<TransferResult>> {
        let p = self.clone();
        async move {
            let UploadRequest { name, source, size_hint, progress, extra } = req;
            let (fd, stream, shown, _stop) = match source {
                UploadSource::Path(path) => {
                    let file = match tokio::fs::File::open(path.as_str()).await {
                        Ok(f) => f.into_std().await,
                        Err(e) => return RResult::RErr(io_failure("cannot open", path.as_str(), &e)),
                    };
                    (OwnedFd::from(file), false, path.into_string(), None)
                }
                UploadSource::Stream(source) => {
                    let (ours, theirs) = match std::os::unix::net::UnixStream::pair() {
                        Ok(p) => p,
                        Err(e) => return RResult::RErr(io_failure("cannot make a socket pair for", "the stream", &e)),
                    };
                    let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
                    let pumped = stop.clone();
                    tokio::task::spawn_blocking(move || bulk::pump(source, ours, pumped));
                    (OwnedFd::from(theirs), true, "the upload stream".to_owned(), Some(bulk::StopOnDrop(stop)))
                }
            };
            let call =
                UploadCall { name: name.into_string(), stream, size_hint: size_hint.into_option(), extra, shown };
            transferred(p.call_with(Call::Upload(call), vec![fd], progress.into_option()).await)
        }
        .into_ffi()
    }

    /// A download to a file: its directory (the host's private temporary
    /// one) goes to the child as an open descriptor, and the plugin creates
    /// the file in it as it would in-process. (A file the host created
    /// first and the plugin opened with `O_TRUNC` would be written back on
    /// close by ext4's replace-by-truncate safeguard: a second or so per
    /// GiB spent waiting.)
    pub(crate) fn download(self: &Arc<Self>, req: DownloadRequest) -> FfiFuture<PResult<TransferResult>> {
        let p = self.clone();
        async move {
            let DownloadRequest { bucket, name, dest, progress, extra } = req;
            let DownloadDest::Path(path) = dest else {
                return RResult::RErr(PluginError::unsupported(
                    "downloads into a stream with isolation = \"process\" (downloads to a file are)",
                ));
            };
            let path = PathBuf::from(path.as_str());
            let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else {
                let why = format!("cannot write {}: not a file in a directory", path.display());
                return RResult::RErr(PluginError::new(PluginKind::IO, why));
            };
            let opened = match tokio::fs::File::open(dir).await {
                Ok(d) => d.into_std().await,
                Err(e) => {
                    return RResult::RErr(io_failure("cannot open the directory", &dir.display().to_string(), &e))
                }
            };
            let call = DownloadCall {
                bucket: bucket.into_string(),
                name: name.into_string(),
                extra,
                file: file.to_owned(),
                shown: dir.display().to_string(),
            };
            transferred(p.call_with(Call::Download(call), vec![OwnedFd::from(opened)], progress.into_option()).await)
        }
        .into_ffi()
    }
}

/// A transfer's answer.
fn transferred(answer: std::result::Result<Answer, PluginError>) -> PResult<TransferResult> {
    match answer {
        Ok(Answer::Transferred(r)) => r,
        Ok(_) => RResult::RErr(mismatched()),
        Err(e) => RResult::RErr(e),
    }
}

fn io_failure(what: &str, path: &str, e: &io::Error) -> PluginError {
    PluginError::new(PluginKind::IO, format!("{what} {path}: {e}"))
}

// ---- the child -------------------------------------------------------------

/// What the child made of the host's [`Hello`].
enum Built {
    /// The provider, to serve.
    Provider(PluginInfo, &'static str, AnyProvider),
    /// Only the file's description.
    Described(PluginInfo, &'static str),
}

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
    // SAFETY: descriptor 4 was set up by the host for this process alone.
    let fds = unsafe { <std::os::unix::net::UnixDatagram as std::os::fd::FromRawFd>::from_raw_fd(CHILD_FDS_FD) };
    let Ok(fds) = fds.set_nonblocking(true).and_then(|()| UnixDatagram::from_std(fds)) else {
        eprintln!("{RUNNER}: descriptor {CHILD_FDS_FD} is not the host's socket (this program is started by credhost)");
        return 2;
    };
    let received = Arc::new(bulk::Received::default());
    tokio::spawn(received.clone().serve(fds));
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
        if hello.describe {
            let (_, loaded) = host.load_plugin(&hello.instance)?;
            return Ok(Built::Described(loaded.info(), loaded.interface()));
        }
        let (info, interface, provider) = host.construct(&hello.instance).await?;
        Ok(Built::Provider(info, interface, provider))
    };
    let (provider, ready) = match built.await {
        Ok(Built::Provider(info, interface, provider)) => {
            let ready = Ready::Loaded { protocol: PROTOCOL, info, interface: interface.to_owned() };
            (Arc::new(provider), ready)
        }
        Ok(Built::Described(info, interface)) => {
            let _ = write_frame(&mut wr, &Ready::Loaded { protocol: PROTOCOL, info, interface: interface.to_owned() })
                .await;
            return 0;
        }
        Err(e) => {
            let _ = write_frame(&mut wr, &failed(e)).await;
            return 0;
        }
    };
    if write_frame(&mut wr, &ready).await.is_err() {
        return 0;
    }
    let (out, mut answers) = mpsc::unbounded_channel::<FromChild>();
    tokio::spawn(async move {
        while let Some(r) = answers.recv().await {
            if write_frame(&mut wr, &r).await.is_err() {
                break;
            }
        }
    });
    let running: Arc<Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>> = Arc::default();
    // Cancelled calls whose futures may not have been dropped yet: a
    // `wait_idle` waits for them first, so the clean-up their drop starts
    // is what it waits for.
    let dying: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    while let Ok(Some(request)) = read_frame::<_, Request>(&mut rd).await {
        match request {
            Request::Cancel(id) => {
                if let Some(task) = running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    task.abort();
                    dying.lock().unwrap_or_else(|p| p.into_inner()).push(task);
                }
                received.forget(id);
            }
            Request::Call(id, call) => {
                let (provider, out, running2, received, dying) =
                    (provider.clone(), out.clone(), running.clone(), received.clone(), dying.clone());
                // Held while the task is registered, so it cannot remove
                // itself before.
                let mut tasks = running.lock().unwrap_or_else(|p| p.into_inner());
                let task = tokio::spawn(async move {
                    if matches!(*call, Call::WaitIdle) {
                        settle(&dying).await;
                    }
                    let answer = answer(&provider, *call, id, &out, &received).await;
                    running2.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    let _ = out.send(FromChild::Answer(Box::new(Response { id, answer })));
                });
                tasks.insert(id, task);
            }
        }
    }
    // The host is gone or done: let cancelled work finish its clean-up.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        settle(&dying).await;
        provider.wait_idle().await
    })
    .await;
    0
}

/// Waits until the cancelled calls' futures are dropped.
async fn settle(dying: &Mutex<Vec<tokio::task::JoinHandle<()>>>) {
    let tasks = std::mem::take(&mut *dying.lock().unwrap_or_else(|p| p.into_inner()));
    for t in tasks {
        let _ = t.await;
    }
}

fn no_descriptor() -> PluginError {
    PluginError::new(PluginKind::OTHER, "the host's file or stream for this transfer never reached the plugin process")
}

/// A descriptor a transfer was handed. Closed at once after a success;
/// after a failure or cancellation only once the plugin is idle (at most a
/// minute): a task of its still running must not open another call's file
/// under the same number.
struct Handed {
    fd: Option<OwnedFd>,
    provider: Arc<AnyProvider>,
    done: bool,
}

impl Handed {
    fn new(fd: OwnedFd, provider: &Arc<AnyProvider>) -> Self {
        Self { fd: Some(fd), provider: provider.clone(), done: false }
    }

    fn path(&self) -> String {
        self.fd.as_ref().map(bulk::fd_path).unwrap_or_default()
    }

    /// The outcome, with the file named as the host named it (not by its
    /// descriptor's path in this process).
    fn outcome(mut self, done: PResult<TransferResult>, shown: &str) -> PResult<TransferResult> {
        self.done = done.is_ok();
        named_as(done, &self.path(), shown)
    }
}

/// `done`, its error saying `shown` where it said `path`.
fn named_as(mut done: PResult<TransferResult>, path: &str, shown: &str) -> PResult<TransferResult> {
    if let RResult::RErr(e) = &mut done {
        e.message = e.message.replace(path, shown).into();
    }
    done
}

impl Drop for Handed {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        if self.done {
            return;
        }
        let p = self.provider.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(60), p.wait_idle()).await;
                drop(fd);
            });
        }
    }
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

async fn answer(
    p: &Arc<AnyProvider>,
    call: Call,
    id: u64,
    out: &mpsc::UnboundedSender<FromChild>,
    received: &bulk::Received,
) -> Answer {
    match call {
        Call::Upload(u) => {
            let Some(fd) = received.take(id).await.and_then(|fds| fds.into_iter().next()) else {
                return Answer::Transferred(RResult::RErr(no_descriptor()));
            };
            let (source, handed, stream) = if u.stream {
                let shut = fd.try_clone().ok().map(std::os::unix::net::UnixStream::from);
                let source = bulk::StreamSource::new(fd);
                (UploadSource::Stream(ByteSource_TO::from_value(source, TD_Opaque)), None, shut)
            } else {
                let handed = Handed::new(fd, p);
                (UploadSource::Path(handed.path().into()), Some(handed), None)
            };
            let progress = bulk::RemoteProgress::new(id, out.clone());
            let req = UploadRequest {
                name: u.name.into(),
                source,
                size_hint: u.size_hint.into(),
                progress: ROption::RSome(Progress_TO::from_value(bulk::SharedProgress(progress.clone()), TD_Opaque)),
                extra: u.extra,
            };
            let done = bulk::ThenShut::new(guarded(p.upload(req)), stream).await;
            progress.flush();
            Answer::Transferred(match handed {
                Some(h) => h.outcome(done, &u.shown),
                None => done,
            })
        }
        Call::Download(d) => {
            let Some(fd) = received.take(id).await.and_then(|fds| fds.into_iter().next()) else {
                return Answer::Transferred(RResult::RErr(no_descriptor()));
            };
            let handed = Handed::new(fd, p);
            let progress = bulk::RemoteProgress::new(id, out.clone());
            let req = DownloadRequest {
                bucket: d.bucket.into(),
                name: d.name.into(),
                dest: DownloadDest::Path(format!("{}/{}", handed.path(), d.file).into()),
                progress: ROption::RSome(Progress_TO::from_value(bulk::SharedProgress(progress.clone()), TD_Opaque)),
                extra: d.extra,
            };
            let done = guarded(p.download(req)).await;
            progress.flush();
            Answer::Transferred(handed.outcome(done, &d.shown))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_error_names_the_file_as_the_host_does() {
        let failed = RResult::RErr(PluginError::new(
            PluginKind::IO,
            "cannot create /proc/self/fd/12: permission denied; /proc/self/fd/12 stays",
        ));
        let RResult::RErr(e) = named_as(failed, "/proc/self/fd/12", "/srv/app/.x.part/app.zip") else {
            panic!("an error stays an error")
        };
        assert_eq!(
            e.message.as_str(),
            "cannot create /srv/app/.x.part/app.zip: permission denied; /srv/app/.x.part/app.zip stays"
        );
    }

    #[test]
    fn only_listed_variables_reach_the_child() {
        let patterns = vec!["AWS_*".to_owned(), "HOME".to_owned()];
        assert!(env_allowed(&patterns, "AWS_SECRET_ACCESS_KEY") && env_allowed(&patterns, "HOME"));
        assert!(!env_allowed(&patterns, "HOMEPATH") && !env_allowed(&patterns, "GOOGLE_APPLICATION_CREDENTIALS"));
    }
}
