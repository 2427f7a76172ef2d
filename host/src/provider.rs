//! A provider of one plugin instance, as the embedding service uses it.

use std::{
    future::Future,
    io::Read,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSliceMut, RVec},
};
use credhost_plugin_api::{
    v1_0, AuthForm, ByteSource, ByteSource_TO, Capabilities, CheckReport, CheckRequest, CredentialEntry,
    CredentialsRequest, DeleteRequest, DownloadDest, DownloadRequest, ErrorKind as PluginKind, Extra, FfiFuture,
    PResult, PluginError, PluginInfo, PresignMethod, PresignRequest, Presigned, ProgressBox, Progress_TO, ProviderBox,
    RegistryAuth, RegistryRequest, TransferResult, UploadRequest, UploadSource,
};

use crate::{config::Limits, names, token_cache::TokenCache, Error, Result};

/// Receives the progress of a transfer. Called from the plugin's threads:
/// keep it quick and never block.
pub trait Progress: Send + Sync {
    /// The total number of bytes, once known.
    fn set_total(&self, total: u64) {
        let _ = total;
    }
    /// `bytes` more bytes were transferred.
    fn advance(&self, bytes: u64);
}

/// The longest a presigned URL may last: 7 days, the limit of S3's and
/// GCS's signatures.
pub const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;

/// Options of [`ProviderHandle::upload_file`].
#[derive(Clone, Default)]
pub struct UploadOptions {
    /// The object name; the file's name when `None`.
    pub name: Option<String>,
    /// Upload even if the file is not a ZIP archive.
    pub no_verify: bool,
    /// Progress reporting.
    pub progress: Option<Arc<dyn Progress>>,
}

/// Options of [`ProviderHandle::download_to_path`].
#[derive(Clone, Default)]
pub struct DownloadOptions {
    /// Replace the destination if it exists.
    pub force: bool,
    /// Progress reporting.
    pub progress: Option<Arc<dyn Progress>>,
}

/// A provider of one plugin instance, with its registry-credentials cache.
/// Cheap to clone; clones share the provider and the cache.
#[derive(Clone)]
pub struct ProviderHandle {
    inner: Arc<Inner>,
}

/// A plugin's provider, by the interface version the plugin speaks.
pub(crate) enum AnyProvider {
    /// The current interface.
    V1_1(ProviderBox),
    /// The released 1.0 interface.
    V1_0(v1_0::ProviderBox),
}

impl AnyProvider {
    fn registry_auth(&self, req: RegistryRequest) -> FfiFuture<PResult<ROption<RegistryAuth>>> {
        match self {
            AnyProvider::V1_1(p) => p.registry_auth(req),
            AnyProvider::V1_0(p) => p.registry_auth(req),
        }
    }
    fn upload(&self, req: UploadRequest) -> FfiFuture<PResult<TransferResult>> {
        match self {
            AnyProvider::V1_1(p) => p.upload(req),
            AnyProvider::V1_0(p) => p.upload(req),
        }
    }
    fn download(&self, req: DownloadRequest) -> FfiFuture<PResult<TransferResult>> {
        match self {
            AnyProvider::V1_1(p) => p.download(req),
            AnyProvider::V1_0(p) => p.download(req),
        }
    }
    fn credentials(&self, req: CredentialsRequest) -> FfiFuture<PResult<RVec<CredentialEntry>>> {
        match self {
            AnyProvider::V1_1(p) => p.credentials(req),
            AnyProvider::V1_0(p) => p.credentials(req),
        }
    }
    fn check(&self, req: CheckRequest) -> FfiFuture<PResult<CheckReport>> {
        match self {
            AnyProvider::V1_1(p) => p.check(req),
            AnyProvider::V1_0(p) => p.check(req),
        }
    }
    fn wait_idle(&self) -> FfiFuture<PResult<()>> {
        match self {
            AnyProvider::V1_1(p) => p.wait_idle(),
            AnyProvider::V1_0(p) => p.wait_idle(),
        }
    }
    /// `None` for a plugin that predates the method.
    fn presign(&self, req: PresignRequest) -> Option<FfiFuture<PResult<Presigned>>> {
        match self {
            AnyProvider::V1_1(p) => Some(p.presign(req)),
            AnyProvider::V1_0(_) => None,
        }
    }
    /// `None` for a plugin that predates the method.
    fn delete(&self, req: DeleteRequest) -> Option<FfiFuture<PResult<()>>> {
        match self {
            AnyProvider::V1_1(p) => Some(p.delete(req)),
            AnyProvider::V1_0(_) => None,
        }
    }
}

struct Inner {
    instance: String,
    plugin: String,
    info: PluginInfo,
    /// The interface minor the plugin speaks (`1.0`, `1.1`).
    interface: &'static str,
    provider: AnyProvider,
    tokens: TokenCache,
    limits: Limits,
    /// Set when the plugin panicked: from then on every call is refused at
    /// once, until a new provider is built.
    failed: AtomicBool,
}

/// The operations, with the capability each needs.
#[derive(Clone, Copy)]
enum Op {
    Registry,
    Upload,
    Download,
    Credentials,
    Check,
    Presign,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Registry => "registry credentials",
            Op::Upload => "upload",
            Op::Download => "download",
            Op::Credentials => "credentials",
            Op::Check => "check",
            Op::Presign => "presigned URLs",
            Op::Delete => "delete",
        }
    }

    /// The interface minor that introduced the operation.
    fn since(self) -> &'static str {
        match self {
            Op::Presign | Op::Delete => "1.1",
            _ => "1.0",
        }
    }

    fn is_transfer(self) -> bool {
        matches!(self, Op::Upload | Op::Download)
    }

    fn capability(self) -> Capabilities {
        match self {
            Op::Registry => Capabilities::REGISTRY,
            Op::Upload => Capabilities::UPLOAD,
            Op::Download => Capabilities::DOWNLOAD,
            Op::Credentials => Capabilities::CREDENTIALS,
            Op::Check => Capabilities::CHECK,
            Op::Presign => Capabilities::PRESIGN,
            Op::Delete => Capabilities::DELETE,
        }
    }
}

impl ProviderHandle {
    pub(crate) fn new(
        instance: String,
        plugin: String,
        info: PluginInfo,
        interface: &'static str,
        provider: AnyProvider,
        limits: Limits,
    ) -> Self {
        let tokens = TokenCache::default();
        let failed = AtomicBool::new(false);
        Self { inner: Arc::new(Inner { instance, plugin, info, interface, provider, tokens, limits, failed }) }
    }

    /// The interface minor the plugin speaks (`1.0`, `1.1`).
    pub fn interface(&self) -> &str {
        self.inner.interface
    }

    /// Whether the plugin panicked in this provider, which then refuses
    /// every call; build a new provider to use the instance again.
    pub fn is_failed(&self) -> bool {
        self.inner.failed.load(Ordering::Acquire)
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.inner.instance
    }

    /// The plugin the instance runs.
    pub fn plugin(&self) -> &str {
        &self.inner.plugin
    }

    /// The plugin's self-description.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// What the plugin offers.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.info.capabilities
    }

    /// Refuses an operation the plugin does not offer, before calling it.
    fn require(&self, op: Op) -> Result<()> {
        if op.since() > self.inner.interface {
            return Err(Error::Unsupported {
                instance: self.inner.instance.clone(),
                op: op.name(),
                why: format!(
                    "plugin `{}` {} implements plugin interface {}, and {} need interface {}; a build of the plugin against credhost-plugin-api {} or later would offer them",
                    self.inner.plugin,
                    self.inner.info.version,
                    self.inner.interface,
                    op.name(),
                    op.since(),
                    op.since()
                ),
            });
        }
        let caps = self.capabilities();
        if caps.contains(op.capability()) {
            return Ok(());
        }
        let offered = caps.names();
        Err(Error::Unsupported {
            instance: self.inner.instance.clone(),
            op: op.name(),
            why: format!(
                "plugin `{}` {} does not offer it (it offers: {})",
                self.inner.plugin,
                self.inner.info.version,
                if offered.is_empty() { "nothing".to_owned() } else { offered.join(", ") }
            ),
        })
    }

    /// Calls into the plugin under the instance's limits: a deadline for
    /// calls, an idle-progress watchdog for transfers (`watch`). Whatever the
    /// plugin's future does, the host survives it: a panic reported by its
    /// poll becomes an error of kind panicked and takes the provider out of
    /// service; a deadline that passes drops the future, which cancels the
    /// plugin's task.
    async fn call<T>(&self, op: Op, fut: FfiFuture<PResult<T>>, watch: Option<&Watch>) -> Result<T> {
        if self.is_failed() {
            return Err(self.plugin_error(
                op,
                PluginError::new(
                    PluginKind::PANICKED,
                    "the plugin panicked earlier and this provider is out of service until it is built again",
                ),
            ));
        }
        let guarded = Guarded(Some(fut));
        let outcome = match watch {
            Some(w) if op.is_transfer() => {
                tokio::select! {
                    r = guarded => Some(r),
                    () = w.stalled(self.inner.limits.transfer_idle) => None,
                }
            }
            _ => tokio::time::timeout(self.inner.limits.call, guarded).await.ok(),
        };
        let after = if op.is_transfer() { self.inner.limits.transfer_idle } else { self.inner.limits.call };
        match outcome {
            None => Err(Error::Timeout { instance: self.inner.instance.clone(), op: op.name(), after }),
            Some(Err(Panicked)) => {
                self.inner.failed.store(true, Ordering::Release);
                let source =
                    PluginError::new(PluginKind::PANICKED, "the plugin panicked (its future reported a panic)");
                Err(self.plugin_error(op, source))
            }
            Some(Ok(r)) => r.into_result().map_err(|source| {
                if source.kind == PluginKind::PANICKED {
                    self.inner.failed.store(true, Ordering::Release);
                }
                self.plugin_error(op, source)
            }),
        }
    }

    fn plugin_error(&self, op: Op, mut source: PluginError) -> Error {
        // Transport errors quote the URL they failed on, and such URLs can be
        // credentials themselves (signed queries, session ids, user:pass@).
        source.message = credhost_plugin_api::rules::scrub_urls(&source.message).into();
        Error::Plugin { instance: self.inner.instance.clone(), op: op.name(), source }
    }

    /// Registry credentials for `registry` (the instance's own when `None`),
    /// optionally for a token `scope`; `None` when the registry needs none.
    /// Answers are cached until shortly before they expire.
    pub async fn registry_auth(&self, registry: Option<&str>, scope: Option<&str>) -> Result<Option<RegistryAuth>> {
        self.registry_auth_as(registry, scope, AuthForm::Any).await
    }

    /// [`ProviderHandle::registry_auth`] for a caller that can hand on only
    /// the given `form` of credentials ([`AuthForm::Basic`]: a user name and
    /// password, as docker credential helpers need). Cached per registry,
    /// scope and form.
    pub async fn registry_auth_as(
        &self,
        registry: Option<&str>,
        scope: Option<&str>,
        form: AuthForm,
    ) -> Result<Option<RegistryAuth>> {
        self.require(Op::Registry)?;
        let key = format!("{}\u{0}{}\u{0}{form:?}", registry.unwrap_or(""), scope.unwrap_or(""));
        self.inner
            .tokens
            .get_or_fetch(&key, || async {
                let mut req = RegistryRequest::for_registry(registry).with_auth_form(form);
                if let Some(scope) = scope {
                    req = req.with_scope(scope);
                }
                let auth = self.call(Op::Registry, self.inner.provider.registry_auth(req), None).await?;
                Ok(auth.into_option())
            })
            .await
    }

    /// Uploads a local file. Refuses, before sending anything, names that
    /// could escape a bucket or confuse a reader, empty files, and (unless
    /// `no_verify`) files that are not ZIP archives.
    pub async fn upload_file(&self, path: &Path, opts: &UploadOptions) -> Result<TransferResult> {
        self.require(Op::Upload)?;
        let name =
            match &opts.name {
                Some(n) => n.clone(),
                None => path.file_name().and_then(|n| n.to_str()).map(str::to_owned).ok_or_else(|| {
                    Error::InvalidInput(format!("cannot derive a project name from {}", path.display()))
                })?,
            };
        names::validate_name(&name)?;
        let (owned, no_verify) = (path.to_path_buf(), opts.no_verify);
        let size = tokio::task::spawn_blocking(move || names::check_upload_file(&owned, !no_verify))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let abs = std::path::absolute(path).map_err(|e| Error::io("cannot resolve", path, e))?;
        let watch = Watch::new(opts.progress.clone());
        let req = UploadRequest {
            name: name.into(),
            source: UploadSource::Path(abs.display().to_string().into()),
            size_hint: ROption::RSome(size),
            progress: watch.progress_box(),
            extra: Extra::new(),
        };
        self.call(Op::Upload, self.inner.provider.upload(req), Some(&watch)).await
    }

    /// Uploads a stream of unknown length (a request body, a pipe). `reader`
    /// is read on a blocking thread; memory stays bounded. The name is
    /// validated; the content is not checked.
    pub async fn upload_reader<R: Read + Send + 'static>(
        &self,
        name: &str,
        reader: R,
        size_hint: Option<u64>,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<TransferResult> {
        self.require(Op::Upload)?;
        names::validate_name(name)?;
        let watch = Watch::new(progress);
        let source = ByteSource_TO::from_value(ReadSource { reader, watch: watch.clone() }, TD_Opaque);
        let req = UploadRequest {
            name: name.into(),
            source: UploadSource::Stream(source),
            size_hint: size_hint.into(),
            progress: watch.progress_box(),
            extra: Extra::new(),
        };
        self.call(Op::Upload, self.inner.provider.upload(req), Some(&watch)).await
    }

    /// Downloads `bucket`/`name` to `dest`. The bytes go to a private
    /// temporary directory beside `dest`, and the file is moved to `dest`
    /// only once the plugin has verified the whole object; on failure or
    /// cancellation nothing appears at `dest`. An existing `dest` is
    /// replaced only with [`DownloadOptions::force`].
    pub async fn download_to_path(
        &self,
        bucket: &str,
        name: &str,
        dest: &Path,
        opts: &DownloadOptions,
    ) -> Result<TransferResult> {
        self.require(Op::Download)?;
        names::validate_bucket(bucket)?;
        names::validate_name(name)?;
        check_destination(dest)?;
        if !opts.force && std::fs::symlink_metadata(dest).is_ok() {
            return Err(Error::Exists(dest.to_path_buf()));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("download");
        let swept = dir.clone();
        let _ = tokio::task::spawn_blocking(move || sweep_stale_downloads(&swept)).await;
        // A directory rather than a file: a cancelled plugin task may still
        // (re)create its output file after the host gave up, and it cannot
        // once the directory is gone. Removed with everything in it on error
        // and when this future is dropped.
        let work = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".part")
            .tempdir_in(&dir)
            .map_err(|e| Error::io("cannot create a directory in", &dir, e))?;
        let part = std::path::absolute(work.path().join(file_name))
            .map_err(|e| Error::io("cannot resolve", work.path(), e))?;
        let watch = Watch::new(opts.progress.clone());
        let req = DownloadRequest {
            bucket: bucket.into(),
            name: name.into(),
            dest: DownloadDest::Path(part.display().to_string().into()),
            progress: watch.progress_box(),
            extra: Extra::new(),
        };
        let result = self.call(Op::Download, self.inner.provider.download(req), Some(&watch)).await?;
        persist(&part, dest, opts.force)?;
        Ok(result)
    }

    /// The entries a build job needs, each marked secret or not.
    pub async fn credentials(&self) -> Result<Vec<CredentialEntry>> {
        self.require(Op::Credentials)?;
        let entries =
            self.call(Op::Credentials, self.inner.provider.credentials(CredentialsRequest::default()), None).await?;
        Ok(entries.into_vec())
    }

    /// A time-limited URL (and the headers a client must send with it) to
    /// GET `bucket`/`name` (`method` GET), or to PUT an object `name` into
    /// the instance's projects bucket (`method` PUT, `bucket` ignored),
    /// working for `expires` (1 second to 7 days). The URL is a credential.
    pub async fn presign(
        &self,
        method: PresignMethod,
        bucket: &str,
        name: &str,
        expires: Duration,
    ) -> Result<Presigned> {
        self.require(Op::Presign)?;
        names::validate_name(name)?;
        if method == PresignMethod::GET {
            names::validate_bucket(bucket)?;
        }
        let secs = expires.as_secs();
        if !(1..=MAX_PRESIGN_SECS).contains(&secs) {
            return Err(Error::InvalidInput(format!(
                "a presigned URL lasts from 1 second to 7 days ({MAX_PRESIGN_SECS} s), not {secs} s"
            )));
        }
        let bucket = if method == PresignMethod::PUT { "" } else { bucket };
        let req = PresignRequest {
            method,
            bucket: bucket.into(),
            name: name.into(),
            expires_secs: secs,
            extra: Extra::new(),
        };
        let Some(fut) = self.inner.provider.presign(req) else { return Err(self.too_old(Op::Presign)) };
        self.call(Op::Presign, fut, None).await
    }

    /// Deletes `bucket`/`name`. Idempotent: deleting what does not exist
    /// succeeds. Names are checked as for uploads.
    pub async fn delete(&self, bucket: &str, name: &str) -> Result<()> {
        self.require(Op::Delete)?;
        names::validate_bucket(bucket)?;
        names::validate_name(name)?;
        let req = DeleteRequest { bucket: bucket.into(), name: name.into(), extra: Extra::new() };
        let Some(fut) = self.inner.provider.delete(req) else { return Err(self.too_old(Op::Delete)) };
        self.call(Op::Delete, fut, None).await
    }

    fn too_old(&self, op: Op) -> Error {
        Error::Unsupported {
            instance: self.inner.instance.clone(),
            op: op.name(),
            why: format!("plugin `{}` implements plugin interface {}", self.inner.plugin, self.inner.interface),
        }
    }

    /// The plugin's live probe.
    pub async fn check(&self) -> Result<CheckReport> {
        self.require(Op::Check)?;
        self.call(Op::Check, self.inner.provider.check(CheckRequest::default()), None).await
    }

    /// Waits (at most `timeout`) for the clean-up work of cancelled
    /// operations to finish. Call it after dropping an operation's future
    /// when the process is about to exit, so that nothing partial is left
    /// behind. Returns whether the plugin became idle in time.
    pub async fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.inner.provider.wait_idle()).await, Ok(RResult::ROk(())))
    }
}

/// Moves the verified download at `part` to `dest`. Without `force` nothing
/// is replaced, even a `dest` that appeared during the download: a hard link
/// fails when `dest` exists (file systems without hard links get a check and
/// a rename).
/// Refuses a destination whose directory does not exist, and an existing
/// destination that is neither a regular file nor a symbolic link, with or
/// without `--force`: the download is renamed into place, which would
/// replace a device, FIFO or socket (as root, `/dev/null` itself) with a
/// plain file. A link is replaced, never followed.
fn check_destination(dest: &Path) -> Result<()> {
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        let why = format!("the directory {} does not exist", dir.display());
        return Err(Error::io("cannot write", dest, std::io::Error::new(std::io::ErrorKind::NotFound, why)));
    }
    let Ok(meta) = std::fs::symlink_metadata(dest) else { return Ok(()) };
    let kind = meta.file_type();
    if kind.is_file() || kind.is_symlink() {
        return Ok(());
    }
    let what = if kind.is_dir() { "a directory" } else { special_kind(&kind) };
    Err(Error::InvalidInput(format!("refusing to write {}: it is {what}, not a regular file", dest.display())))
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

fn persist(part: &Path, dest: &Path, force: bool) -> Result<()> {
    let persisted = if force {
        std::fs::rename(part, dest)
    } else {
        match std::fs::hard_link(part, dest) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                if std::fs::symlink_metadata(dest).is_ok() {
                    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
                } else {
                    std::fs::rename(part, dest)
                }
            }
            other => other,
        }
    };
    match persisted {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists(dest.to_path_buf())),
        Err(e) => Err(Error::io("cannot write", dest, e)),
    }
}

/// Watches a transfer for progress: every report of the plugin (and every
/// read of a streamed source) counts, and is passed on to the caller's
/// progress receiver.
#[derive(Clone)]
struct Watch(Arc<WatchInner>);

struct WatchInner {
    started: Instant,
    /// Milliseconds after `started` of the latest sign of progress.
    last: AtomicU64,
    forward: Option<Arc<dyn Progress>>,
}

impl Watch {
    fn new(forward: Option<Arc<dyn Progress>>) -> Self {
        Self(Arc::new(WatchInner { started: Instant::now(), last: AtomicU64::new(0), forward }))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing moved for `idle`.
    async fn stalled(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.0.last.load(Ordering::Relaxed));
            let quiet = self.0.started.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep((idle - quiet).min(Duration::from_secs(1))).await;
        }
    }

    fn progress_box(&self) -> ROption<ProgressBox> {
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
struct Guarded<F>(Option<F>);

/// The plugin's future panicked.
struct Panicked;

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
struct ReadSource<R> {
    reader: R,
    watch: Watch,
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

/// How old a download's temporary directory must be before a later download
/// beside it takes it for the remains of a killed process.
const STALE_DOWNLOAD: Duration = Duration::from_secs(24 * 3600);

/// Removes the temporary directories that downloads killed outright (power
/// loss, SIGKILL) left in `dir` more than a day ago: directories of this
/// user named `.NAME.XXXXXX.part` holding at most the one file `NAME`.
fn sweep_stale_downloads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(inner) = stale_part_name(name) else { continue };
        let path = entry.path();
        if is_stale_download(&path, inner) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(target: "credhost::download", dir = %path.display(), "removed the remains of an interrupted download")
                }
                Err(e) => {
                    tracing::debug!(target: "credhost::download", dir = %path.display(), "cannot remove an old temporary directory: {e}")
                }
            }
        }
    }
}

/// `NAME` of a `.NAME.XXXXXX.part` directory name.
fn stale_part_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(".part")?;
    let (inner, random) = rest.rsplit_once('.')?;
    (random.len() == 6 && random.bytes().all(|b| b.is_ascii_alphanumeric()) && !inner.is_empty()).then_some(inner)
}

fn is_stale_download(path: &Path, inner: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    // SAFETY: geteuid has no preconditions.
    if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
        return false;
    }
    let old =
        |m: &std::fs::Metadata| m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > STALE_DOWNLOAD);
    if !old(&meta) {
        return false;
    }
    let Ok(mut contents) = std::fs::read_dir(path) else { return false };
    match contents.next() {
        None => true,
        Some(Ok(e)) => {
            e.file_name() == inner
                && contents.next().is_none()
                && std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_file() && old(&m))
        }
        Some(Err(_)) => false,
    }
}
