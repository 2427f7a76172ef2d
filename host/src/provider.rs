//! A provider of one plugin instance, as the embedding service uses it.

use std::{
    io::Read,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RVec},
};
use credhost_plugin_api::{
    v1_0, v1_1, v1_2, ByteSource_TO, CheckRequest, CreateOnly, CredentialsRequest, DeleteRequest, DownloadDest,
    DownloadRequest, ErrorKind as PluginKind, Extra, FfiFuture, PResult, PluginError, PresignRequest, ProviderBox,
    RegistryRequest, UploadRequest, UploadSource,
};

use crate::{
    config::Limits,
    error::PluginFailure,
    guard::{Guarded, Panicked, ReadSource, Watch},
    names,
    registries::Served,
    staging::Staging,
    token_cache::{OnError, TokenCache},
    AuthForm, CheckReport, CreateOnlySupport, CredentialEntry, Error, Operation, PluginInfo, PresignMethod, Presigned,
    RegistryAuth, Result, TransferResult,
};

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
    /// Create only: store the object only if no object of its name exists,
    /// checked by the store atomically; a name taken first fails with
    /// [`crate::ErrorKind::AlreadyExists`] and stores nothing. Refused on a
    /// store that ignores the precondition (a canary object tells), unless
    /// the instance sets `create_only = "best-effort"`.
    pub if_absent: bool,
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
    /// What the audit lines of calls through this handle say of their caller.
    context: AuditContext,
}

/// The caller's part of audit lines.
#[derive(Clone, Default)]
struct AuditContext {
    /// The caller's label (`--audit-label`, [`ProviderHandle::with_audit_label`]).
    label: Option<Arc<str>>,
    /// The operation registry credentials are logged as (`kubelet` for the
    /// kubelet provider); `token` when `None`.
    token_op: Option<&'static str>,
}

/// The object a provider writes, with the create-only precondition, to
/// learn whether its store enforces it (see
/// [`ProviderHandle::create_only_enforced`]).
pub const CREATE_ONLY_CANARY: &str = ".credhost/create-only-canary";

/// The longest caller label kept in an audit line, in characters.
const MAX_AUDIT_LABEL: usize = 1024;

/// An instance's audit log, and how its lines name the plugin.
pub(crate) struct Audit {
    pub(crate) log: Arc<crate::audit::AuditLog>,
    /// `{name, version, sha256}` of the plugin file.
    pub(crate) plugin: serde_json::Value,
}

/// A plugin's provider, by the interface version the plugin speaks.
pub(crate) enum AnyProvider {
    /// The current interface.
    V1_3(ProviderBox),
    /// The released 1.2 interface.
    V1_2(v1_2::ProviderBox),
    /// The released 1.1 interface.
    V1_1(v1_1::ProviderBox),
    /// The released 1.0 interface.
    V1_0(v1_0::ProviderBox),
    /// A plugin in a child process (`isolation = "process"`).
    Process(Arc<crate::isolation::ProcessProvider>),
}

/// Calls the method every interface version has, whichever the plugin speaks.
macro_rules! on_every {
    ($self:ident, $p:ident => $call:expr) => {
        match $self {
            AnyProvider::V1_3($p) => $call,
            AnyProvider::V1_2($p) => $call,
            AnyProvider::V1_1($p) => $call,
            AnyProvider::V1_0($p) => $call,
            AnyProvider::Process($p) => $call,
        }
    };
}

impl AnyProvider {
    pub(crate) fn registry_auth(
        &self,
        req: RegistryRequest,
    ) -> FfiFuture<PResult<ROption<credhost_plugin_api::RegistryAuth>>> {
        on_every!(self, p => p.registry_auth(req))
    }
    pub(crate) fn upload(&self, req: UploadRequest) -> FfiFuture<PResult<credhost_plugin_api::TransferResult>> {
        on_every!(self, p => p.upload(req))
    }
    pub(crate) fn download(&self, req: DownloadRequest) -> FfiFuture<PResult<credhost_plugin_api::TransferResult>> {
        on_every!(self, p => p.download(req))
    }
    pub(crate) fn credentials(
        &self,
        req: CredentialsRequest,
    ) -> FfiFuture<PResult<RVec<credhost_plugin_api::CredentialEntry>>> {
        on_every!(self, p => p.credentials(req))
    }
    pub(crate) fn check(&self, req: CheckRequest) -> FfiFuture<PResult<credhost_plugin_api::CheckReport>> {
        on_every!(self, p => p.check(req))
    }
    pub(crate) fn wait_idle(&self) -> FfiFuture<PResult<()>> {
        on_every!(self, p => p.wait_idle())
    }
    /// `None` for a plugin that predates the method.
    pub(crate) fn presign(&self, req: PresignRequest) -> Option<FfiFuture<PResult<credhost_plugin_api::Presigned>>> {
        match self {
            AnyProvider::V1_3(p) => Some(p.presign(req)),
            AnyProvider::V1_2(p) => Some(p.presign(req)),
            AnyProvider::V1_1(p) => Some(p.presign(req)),
            AnyProvider::Process(p) => Some(p.presign(req)),
            AnyProvider::V1_0(_) => None,
        }
    }
    /// `None` for a plugin that predates the method.
    pub(crate) fn delete(&self, req: DeleteRequest) -> Option<FfiFuture<PResult<()>>> {
        match self {
            AnyProvider::V1_3(p) => Some(p.delete(req)),
            AnyProvider::V1_2(p) => Some(p.delete(req)),
            AnyProvider::V1_1(p) => Some(p.delete(req)),
            AnyProvider::Process(p) => Some(p.delete(req)),
            AnyProvider::V1_0(_) => None,
        }
    }
    /// `None` for a plugin that predates the method.
    pub(crate) fn grant(
        &self,
        req: credhost_plugin_api::GrantRequest,
    ) -> Option<FfiFuture<PResult<credhost_plugin_api::Grant>>> {
        match self {
            AnyProvider::V1_3(p) => Some(p.grant(req)),
            AnyProvider::V1_2(p) => Some(p.grant(req)),
            AnyProvider::Process(p) => Some(p.grant(req)),
            AnyProvider::V1_1(_) | AnyProvider::V1_0(_) => None,
        }
    }
    /// `None` for a plugin that predates the method.
    pub(crate) fn workload_registry_auth(
        &self,
        req: credhost_plugin_api::WorkloadAuthRequest,
    ) -> Option<FfiFuture<PResult<ROption<credhost_plugin_api::RegistryAuth>>>> {
        match self {
            AnyProvider::V1_3(p) => Some(p.workload_registry_auth(req)),
            AnyProvider::Process(p) => Some(p.workload_registry_auth(req)),
            AnyProvider::V1_2(_) | AnyProvider::V1_1(_) | AnyProvider::V1_0(_) => None,
        }
    }
    /// The child's pid, for a plugin in a process of its own that is running.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            AnyProvider::Process(p) => p.pid(),
            _ => None,
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
    /// What was asked of the plugin for each key of `tokens`, to refresh
    /// it ahead of time.
    token_requests: std::sync::Mutex<std::collections::HashMap<String, TokenRequest>>,
    limits: Limits,
    /// The registries the instance serves, to word registry requests: the
    /// configuration's, replaced when an edit of it keeps the provider.
    served: std::sync::RwLock<Served>,
    /// Set when the plugin panicked: from then on every call is refused at
    /// once, until a new provider is built.
    failed: AtomicBool,
    /// The audit log (`[audit]`), when there is one.
    audit: Option<Audit>,
    /// What the store does with create-only writes, once the canary told.
    create_only_enforced: tokio::sync::OnceCell<CreateOnlySupport>,
    /// `create_only = "best-effort"`.
    create_only_best_effort: bool,
}

/// The audit fields of registry credentials handed out.
pub(crate) fn auth_issued(auth: Option<&RegistryAuth>, log: &crate::audit::AuditLog) -> serde_json::Value {
    match auth {
        None => serde_json::json!({ "credentials": "none needed" }),
        Some(a) => serde_json::json!({
            "server": a.server,
            "username": a.username,
            "kind": format!("{:?}", a.kind).to_lowercase(),
            "expires_at": a.expires_at.map(|t| crate::grant::rfc3339(crate::types::unix_seconds(t))),
            "secrets": { "password": log.hash(a.secret.expose()) },
        }),
    }
}

/// The audit form of entries handed out: secret values as keyed hashes,
/// the others as they are.
fn entries_issued(entries: &[CredentialEntry], log: &crate::audit::AuditLog) -> serde_json::Value {
    entries
        .iter()
        .map(|e| {
            let value = if e.secret { log.hash(e.value.expose()) } else { e.value.expose().to_owned() };
            (e.key.clone(), serde_json::Value::String(value))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// What a registry-credentials request asked of the plugin.
#[derive(Clone)]
struct TokenRequest {
    /// The registry as asked of the plugin (`None`: the instance's own).
    registry: Option<String>,
    scope: Option<String>,
    form: AuthForm,
}

impl TokenRequest {
    /// Its key in the token cache.
    fn key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{:?}",
            self.registry.as_deref().unwrap_or(""),
            self.scope.as_deref().unwrap_or(""),
            self.form
        )
    }
}

/// A platform that is down, failing or slow: the cached answer until it
/// expires. Refused credentials: nothing.
fn stale_on_error(e: &Error) -> OnError {
    match e.kind() {
        crate::ErrorKind::Unavailable | crate::ErrorKind::TimedOut => OnError::ServeStale,
        _ => OnError::Drop,
    }
}

/// The deadline an operation runs under.
fn is_transfer(op: Operation) -> bool {
    matches!(op, Operation::Upload | Operation::Download)
}

impl ProviderHandle {
    pub(crate) fn new(
        instance: String,
        plugin: String,
        info: PluginInfo,
        interface: &'static str,
        provider: AnyProvider,
        limits: Limits,
        served: Served,
    ) -> Self {
        let inner = Inner {
            instance,
            plugin,
            info,
            interface,
            provider,
            tokens: TokenCache::default(),
            token_requests: Default::default(),
            limits,
            served: std::sync::RwLock::new(served),
            failed: AtomicBool::new(false),
            audit: None,
            create_only_enforced: tokio::sync::OnceCell::new(),
            create_only_best_effort: false,
        };
        Self { inner: Arc::new(inner), context: AuditContext::default() }
    }

    /// A new handle with `audit` as its audit log, and best-effort
    /// create-only writes when `best_effort` (`create_only = "best-effort"`).
    pub(crate) fn with_instance_options(mut self, audit: Option<Audit>, best_effort: bool) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.audit = audit;
            inner.create_only_best_effort = best_effort;
        }
        self
    }

    /// Whether the store refuses a create-only upload of a name that exists
    /// (rather than overwriting it), on every upload path probed: see
    /// [`create_only_support`](Self::create_only_support).
    pub async fn create_only_enforced(&self) -> Result<bool> {
        Ok(self.create_only_support().await?.enforced())
    }

    /// What the store does with create-only writes: a canary object,
    /// [`CREATE_ONLY_CANARY`], is written with the precondition in a single
    /// request (twice when the first write creates it), then, from plugins
    /// that can be asked for it, by the store's multi-part path (an S3
    /// multipart upload, a GCS resumable session), since some servers check
    /// the precondition on one path only. The canary stays (one byte), so
    /// that later probes cost refused requests only. Found once per provider.
    pub async fn create_only_support(&self) -> Result<CreateOnlySupport> {
        self.require(Operation::Upload)?;
        if !self.inner.info.create_only {
            return Err(Error::Unsupported {
                instance: self.inner.instance.clone(),
                op: "create-only uploads",
                why: format!("plugin `{}` does not say that it honours them", self.inner.plugin),
            });
        }
        self.inner
            .create_only_enforced
            .get_or_try_init(|| async {
                if self.put_canary(false).await? && self.put_canary(false).await? {
                    return Ok(CreateOnlySupport::Ignored);
                }
                if !self.inner.info.multi_part {
                    return Ok(CreateOnlySupport::EnforcedMultiPartUnknown);
                }
                Ok(if self.put_canary(true).await? {
                    CreateOnlySupport::IgnoredOnMultiPart
                } else {
                    CreateOnlySupport::Enforced
                })
            })
            .await
            .copied()
    }

    /// Writes the canary with the precondition, by the store's multi-part
    /// path when `multi_part`: whether it was created (or replaced).
    async fn put_canary(&self, multi_part: bool) -> Result<bool> {
        let source = ByteSource_TO::from_value(
            ReadSource { reader: std::io::Cursor::new(vec![b'\n']), watch: Watch::new(None) },
            TD_Opaque,
        );
        let req = UploadRequest {
            name: CREATE_ONLY_CANARY.into(),
            source: UploadSource::Stream(source),
            size_hint: ROption::RSome(1),
            progress: ROption::RNone,
            extra: Extra::new(),
        }
        .with_if_absent(CreateOnly::Required);
        let req = if multi_part { req.with_multi_part() } else { req };
        match self.call(Operation::Upload, self.inner.provider.upload(req), None).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How a create-only write of this instance is asked of its plugin: an
    /// upload, or a single request (a presigned PUT) when `single_request`.
    async fn create_only_mode(&self, single_request: bool) -> Result<CreateOnly> {
        let support = match self.create_only_support().await {
            Ok(s) if s.enforced() => return Ok(CreateOnly::Required),
            Ok(CreateOnlySupport::IgnoredOnMultiPart) if single_request => return Ok(CreateOnly::Required),
            Ok(s) => Some(s),
            // Racy by choice anyway: a canary that cannot be written
            // changes nothing (the upload says what is wrong, if anything).
            Err(e) if self.inner.create_only_best_effort && e.kind() != crate::ErrorKind::Unsupported => None,
            Err(e) => return Err(e),
        };
        if self.inner.create_only_best_effort {
            return Ok(CreateOnly::BestEffort);
        }
        let ignored = match support {
            Some(CreateOnlySupport::IgnoredOnMultiPart) => {
                "ignores create-only preconditions on multi-part uploads (a canary object written again by a multi-part upload was overwritten, though single-request writes were refused)"
            }
            _ => "ignores create-only preconditions (a canary object written twice was overwritten)",
        };
        Err(Error::InvalidInput(format!(
            "the store of instance `{0}` {ignored}, so a create-only upload cannot be promised; set create_only = \"best-effort\" in [plugins.{0}] to look for the name, then write (racy)",
            self.inner.instance
        )))
    }

    /// This provider (sharing its cache), with `label` in the audit lines of
    /// the calls made through the returned handle: who asked and why, e.g.
    /// `deploy 1234 by alice`. Kept to one line of at most 1,024 characters.
    pub fn with_audit_label(&self, label: &str) -> Self {
        let mut label = crate::one_line(label);
        if let Some((cut, _)) = label.char_indices().nth(MAX_AUDIT_LABEL) {
            label.truncate(cut);
        }
        let mut handle = self.clone();
        handle.context.label = Some(label.into());
        handle
    }

    /// This provider, its registry credentials logged as issued to the
    /// kubelet (operation `kubelet` in the audit log).
    pub fn for_kubelet(&self) -> Self {
        let mut handle = self.clone();
        handle.context.token_op = Some("kubelet");
        handle
    }

    /// The audit log of this instance, when the configuration keeps one.
    pub fn audit_log(&self) -> Option<&Arc<crate::audit::AuditLog>> {
        self.inner.audit.as_ref().map(|a| &a.log)
    }

    /// Writes the audit line of `op`, which ended in `result`, when the
    /// configuration keeps an audit log: `fields` says what was asked,
    /// `issued` what was handed out (secrets only as keyed hashes). A line
    /// that a `required` log cannot take fails the call: `result` is not
    /// handed out.
    async fn audited<T>(
        &self,
        op: &str,
        fields: serde_json::Value,
        result: Result<T>,
        issued: impl FnOnce(&T, &crate::audit::AuditLog) -> serde_json::Value,
    ) -> Result<T> {
        let Some(audit) = &self.inner.audit else { return result };
        let mut record =
            crate::audit::record(op, &self.inner.instance, audit.plugin.clone(), self.context.label.as_deref());
        let merge = |record: &mut serde_json::Map<String, serde_json::Value>, v: serde_json::Value| {
            if let serde_json::Value::Object(m) = v {
                record.extend(m);
            }
        };
        merge(&mut record, fields);
        match &result {
            Ok(v) => {
                record.insert("outcome".into(), "ok".into());
                merge(&mut record, issued(v, &audit.log));
            }
            Err(e) => {
                record.insert("outcome".into(), "failed".into());
                record.insert(
                    "error".into(),
                    serde_json::json!({ "kind": e.kind().name(), "message": crate::one_line(&e.to_string()) }),
                );
            }
        }
        match (audit.log.write(serde_json::Value::Object(record)).await, result) {
            (Ok(()), result) | (Err(_), result @ Err(_)) => result,
            (Err(e), Ok(_)) => Err(Error::Audit(format!(
                "{e}; {}",
                match op {
                    "upload" => "the object was stored, but its upload is not in the log",
                    "delete" => "the object was deleted, but its deletion is not in the log",
                    _ => "nothing was handed out",
                }
            ))),
        }
    }

    /// The interface minor the plugin speaks (`1.0`, `1.1`).
    pub fn interface(&self) -> &str {
        self.inner.interface
    }

    /// Whether `other` is a handle of the same provider and cache.
    pub(crate) fn same_as(&self, other: &ProviderHandle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
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

    /// Takes the registries a new configuration maps to the instance (an
    /// edit that keeps the provider, its plugin and settings unchanged).
    pub(crate) fn reroute(&self, config: &crate::config::Config) {
        let served = Served::new(config, &self.inner.instance, Some(&self.inner.info));
        *self.inner.served.write().unwrap_or_else(|p| p.into_inner()) = served;
    }

    /// The process id of the plugin's child process, when the instance runs
    /// with `isolation = "process"` and its child is running.
    pub fn process_id(&self) -> Option<u32> {
        self.inner.provider.pid()
    }

    /// The state of the plugin's child process (pid, crashes in a row, the
    /// pause before the next start), when the instance runs with
    /// `isolation = "process"`.
    pub fn process_state(&self) -> Option<crate::ProcessState> {
        match &self.inner.provider {
            AnyProvider::Process(p) => Some(p.state()),
            _ => None,
        }
    }

    /// Whether the plugin offers `op` (and speaks an interface that has it).
    pub fn offers(&self, op: Operation) -> bool {
        self.require(op).is_ok()
    }

    /// Refuses an operation the plugin does not offer, before calling it.
    pub(crate) fn require(&self, op: Operation) -> Result<()> {
        if minor(op.since()) > minor(self.inner.interface) {
            return Err(Error::Unsupported {
                instance: self.inner.instance.clone(),
                op: op.description(),
                why: format!(
                    "plugin `{}` {} implements plugin interface {}, and {} need interface {}; a build of the plugin against credhost-plugin-api {} or later would offer them",
                    self.inner.plugin,
                    self.inner.info.version,
                    self.inner.interface,
                    op.description(),
                    op.since(),
                    op.since()
                ),
            });
        }
        if self.inner.info.offers(op) {
            return Ok(());
        }
        let offered = self.inner.info.capability_names();
        Err(Error::Unsupported {
            instance: self.inner.instance.clone(),
            op: op.description(),
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
    async fn call<T>(&self, op: Operation, fut: FfiFuture<PResult<T>>, watch: Option<&Watch>) -> Result<T> {
        if self.is_failed() {
            return Err(self.plugin_error(
                op,
                &PluginError::new(
                    PluginKind::PANICKED,
                    "the plugin panicked earlier and this provider is out of service until it is built again",
                ),
            ));
        }
        let guarded = Guarded(Some(fut));
        let outcome = match watch {
            Some(w) if is_transfer(op) => {
                tokio::select! {
                    r = guarded => Some(r),
                    () = w.stalled(self.inner.limits.transfer_idle) => None,
                }
            }
            _ => tokio::time::timeout(self.inner.limits.call, guarded).await.ok(),
        };
        let after = if is_transfer(op) { self.inner.limits.transfer_idle } else { self.inner.limits.call };
        match outcome {
            None => Err(Error::Timeout { instance: self.inner.instance.clone(), op: op.description(), after }),
            Some(Err(Panicked)) => {
                self.inner.failed.store(true, Ordering::Release);
                let source =
                    PluginError::new(PluginKind::PANICKED, "the plugin panicked (its future reported a panic)");
                Err(self.plugin_error(op, &source))
            }
            Some(Ok(r)) => r.into_result().map_err(|source| {
                if source.kind == PluginKind::PANICKED {
                    self.inner.failed.store(true, Ordering::Release);
                }
                self.plugin_error(op, &source)
            }),
        }
    }

    fn plugin_error(&self, op: Operation, source: &PluginError) -> Error {
        Error::Plugin {
            instance: self.inner.instance.clone(),
            op: op.description(),
            source: PluginFailure::from_api(source),
        }
    }

    /// Registry credentials for `registry` (a host or URL; the instance's
    /// own registry when `None`), optionally for a token `scope`; `None`
    /// when the registry needs none. A host the configuration maps to this
    /// instance (its `registries` list, `[registries]`) is asked of the
    /// plugin as the instance's own registry, and answered for that host.
    /// Answers are cached until shortly before they expire.
    pub async fn registry_auth(&self, registry: Option<&str>, scope: Option<&str>) -> Result<Option<RegistryAuth>> {
        self.registry_auth_as(registry, scope, AuthForm::Any).await
    }

    /// [`ProviderHandle::registry_auth`] for a caller that can hand on only
    /// the given `form` of credentials ([`AuthForm::Basic`]: a user name and
    /// password, as docker credential helpers need). Cached per requested
    /// registry, scope and form.
    pub async fn registry_auth_as(
        &self,
        registry: Option<&str>,
        scope: Option<&str>,
        form: AuthForm,
    ) -> Result<Option<RegistryAuth>> {
        self.require(Operation::Registry)?;
        let host = registry.map(crate::patterns::checked_host).transpose()?;
        let asked =
            host.as_deref().and_then(|h| self.inner.served.read().unwrap_or_else(|p| p.into_inner()).request_for(h));
        let req = TokenRequest { registry: asked, scope: scope.map(str::to_owned), form };
        let key = req.key();
        self.inner
            .token_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert_with(|| req.clone());
        let result = self.inner.tokens.get_or_refresh(&key, || self.fetch_token(&req), stale_on_error).await;
        let fields =
            serde_json::json!({ "registry": host, "scope": scope, "form": format!("{form:?}").to_lowercase() });
        let result = result.map(|auth| {
            auth.map(|mut a| {
                if let Some(host) = host {
                    a.server = host;
                }
                a
            })
        });
        self.audited(self.context.token_op.unwrap_or("token"), fields, result, |auth, log| {
            auth_issued(auth.as_ref(), log)
        })
        .await
    }

    /// Asks the plugin for the registry credentials `req` describes.
    async fn fetch_token(&self, req: &TokenRequest) -> Result<Option<RegistryAuth>> {
        let mut ask = RegistryRequest::for_registry(req.registry.as_deref()).with_auth_form(req.form.to_api());
        if let Some(scope) = &req.scope {
            ask = ask.with_scope(scope);
        }
        let auth = self.call(Operation::Registry, self.inner.provider.registry_auth(ask), None).await?;
        Ok(auth.into_option().map(|a| RegistryAuth::from_api(&a)))
    }

    /// Refreshes, ahead of their refresh point, the cached registry
    /// credentials that near it and were asked for in the last half hour,
    /// so that callers keep finding them cached and never wait on the
    /// platform for them: [`crate::LiveHost`] calls it every second. A
    /// refresh that fails leaves the cached credentials in use until they
    /// expire (dropped at once when the platform refused them), and is tried
    /// again after a pause.
    pub async fn refresh_tokens(&self) {
        if self.is_failed() {
            return;
        }
        let due: Vec<(String, TokenRequest)> = {
            let mut requests = self.inner.token_requests.lock().unwrap_or_else(|p| p.into_inner());
            for key in self.inner.tokens.prune() {
                requests.remove(&key);
            }
            self.inner.tokens.due().into_iter().filter_map(|k| requests.get(&k).cloned().map(|r| (k, r))).collect()
        };
        let refreshes =
            due.iter().map(|(key, req)| self.inner.tokens.refresh(key, || self.fetch_token(req), stale_on_error));
        futures::future::join_all(refreshes).await;
    }

    /// Uploads a local file. Refuses, before sending anything, names that
    /// could escape a bucket or confuse a reader, empty files, and (unless
    /// `no_verify`) files that are not ZIP archives.
    pub async fn upload_file(&self, path: &Path, opts: &UploadOptions) -> Result<TransferResult> {
        self.require(Operation::Upload)?;
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
            name: name.as_str().into(),
            source: UploadSource::Path(abs.display().to_string().into()),
            size_hint: ROption::RSome(size),
            progress: watch.progress_box(),
            extra: Extra::new(),
        };
        let (req, mode) = self.create_only(req, opts.if_absent).await?;
        let stored = self.call(Operation::Upload, self.inner.provider.upload(req), Some(&watch)).await;
        self.audit_upload(&name, stored, mode).await
    }

    /// `req`, asking for a create-only write when `if_absent`, and how.
    async fn create_only(&self, req: UploadRequest, if_absent: bool) -> Result<(UploadRequest, Option<CreateOnly>)> {
        if !if_absent {
            return Ok((req, None));
        }
        let mode = self.create_only_mode(false).await?;
        Ok((req.with_if_absent(mode), Some(mode)))
    }

    /// Writes the audit line of an upload of `name`.
    async fn audit_upload(
        &self,
        name: &str,
        stored: Result<credhost_plugin_api::TransferResult>,
        mode: Option<CreateOnly>,
    ) -> Result<TransferResult> {
        let create_only = mode.map(|m| match m {
            CreateOnly::Required => "enforced",
            CreateOnly::BestEffort => "best-effort",
        });
        let stored = stored
            .map(|s| TransferResult { create_only: create_only.map(str::to_owned), ..TransferResult::from_api(&s) });
        let fields = serde_json::json!({ "object": { "name": name }, "create_only": create_only });
        self.audited("upload", fields, stored, |t, _| {
            serde_json::json!({ "object": { "bucket": t.bucket, "name": t.name, "size": t.size, "checksum": t.checksum, "generation": t.generation } })
        })
        .await
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
        let opts = UploadOptions { progress, ..UploadOptions::default() };
        self.upload_reader_with(name, reader, size_hint, &opts).await
    }

    /// [`ProviderHandle::upload_reader`] with options: `progress` and
    /// `if_absent` (`name` and `no_verify` do not apply to streams).
    pub async fn upload_reader_with<R: Read + Send + 'static>(
        &self,
        name: &str,
        reader: R,
        size_hint: Option<u64>,
        opts: &UploadOptions,
    ) -> Result<TransferResult> {
        let progress = opts.progress.clone();
        self.require(Operation::Upload)?;
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
        let (req, mode) = self.create_only(req, opts.if_absent).await?;
        let stored = self.call(Operation::Upload, self.inner.provider.upload(req), Some(&watch)).await;
        self.audit_upload(name, stored, mode).await
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
        self.require(Operation::Download)?;
        names::validate_bucket(bucket)?;
        names::validate_name(name)?;
        let staging = Staging::beside(dest, opts.force).await?;
        let watch = Watch::new(opts.progress.clone());
        let req = DownloadRequest {
            bucket: bucket.into(),
            name: name.into(),
            dest: DownloadDest::Path(staging.part().display().to_string().into()),
            progress: watch.progress_box(),
            extra: Extra::new(),
        };
        let fetched = self.call(Operation::Download, self.inner.provider.download(req), Some(&watch)).await?;
        staging.finish(dest, opts.force)?;
        Ok(TransferResult::from_api(&fetched))
    }

    /// The entries a build job needs, each marked secret or not.
    pub async fn credentials(&self) -> Result<Vec<CredentialEntry>> {
        self.require(Operation::Credentials)?;
        let entries = self
            .call(Operation::Credentials, self.inner.provider.credentials(CredentialsRequest::default()), None)
            .await
            .map(|entries| entries.iter().map(CredentialEntry::from_api).collect::<Vec<_>>());
        self.audited(
            "credentials",
            serde_json::json!({}),
            entries,
            |entries, log| serde_json::json!({ "entries": entries_issued(entries, log) }),
        )
        .await
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
        self.presign_with(method, bucket, name, expires, false).await
    }

    /// [`ProviderHandle::presign`]; with `if_absent` (a PUT only) the URL
    /// can only create the object: the store's precondition is signed into
    /// it and listed among the headers a client must send, so a replayed URL
    /// cannot overwrite. Refused on a store that ignores the precondition.
    pub async fn presign_with(
        &self,
        method: PresignMethod,
        bucket: &str,
        name: &str,
        expires: Duration,
        if_absent: bool,
    ) -> Result<Presigned> {
        self.require(Operation::Presign)?;
        if if_absent && method != PresignMethod::Put {
            return Err(Error::InvalidInput("only a presigned PUT can be create-only".into()));
        }
        names::validate_name(name)?;
        if method == PresignMethod::Get {
            names::validate_bucket(bucket)?;
        }
        let secs = expires.as_secs();
        if !(1..=MAX_PRESIGN_SECS).contains(&secs) {
            return Err(Error::InvalidInput(format!(
                "a presigned URL lasts from 1 second to 7 days ({MAX_PRESIGN_SECS} s), not {secs} s"
            )));
        }
        let bucket = if method == PresignMethod::Put { "" } else { bucket };
        let req = PresignRequest {
            method: method.to_api(),
            bucket: bucket.into(),
            name: name.into(),
            expires_secs: secs,
            extra: Extra::new(),
        };
        let req = if if_absent {
            match self.create_only_mode(true).await? {
                CreateOnly::Required => req.with_if_absent(CreateOnly::Required),
                CreateOnly::BestEffort => {
                    return Err(Error::InvalidInput(format!(
                        "the store of instance `{}` ignores create-only preconditions: a presigned URL cannot be made create-only there (create_only = \"best-effort\" cannot look first for a URL used later)",
                        self.inner.instance
                    )))
                }
            }
        } else {
            req
        };
        let Some(fut) = self.inner.provider.presign(req) else { return Err(self.too_old(Operation::Presign)) };
        let signed = self.call(Operation::Presign, fut, None).await.map(|s| Presigned::from_api(&s, method));
        let fields = serde_json::json!({
            "method": method.as_str(),
            "object": { "bucket": (!bucket.is_empty()).then_some(bucket), "name": name },
            "expires_in": secs,
            "if_absent": if_absent,
        });
        self.audited("presign", fields, signed, |p, log| {
            serde_json::json!({
                "expires_at": crate::grant::rfc3339(crate::types::unix_seconds(p.expires_at)),
                "secrets": { "url": log.hash(p.url.expose()) },
            })
        })
        .await
    }

    /// Deletes `bucket`/`name`. Idempotent: deleting what does not exist
    /// succeeds; a store that cannot tell (no permission to look) fails.
    /// Names are checked as for uploads.
    pub async fn delete(&self, bucket: &str, name: &str) -> Result<()> {
        self.require(Operation::Delete)?;
        names::validate_bucket(bucket)?;
        names::validate_name(name)?;
        let req = DeleteRequest { bucket: bucket.into(), name: name.into(), extra: Extra::new() };
        let Some(fut) = self.inner.provider.delete(req) else { return Err(self.too_old(Operation::Delete)) };
        let deleted = self.call(Operation::Delete, fut, None).await;
        let fields = serde_json::json!({ "object": { "bucket": bucket, "name": name } });
        self.audited("delete", fields, deleted, |_, _| serde_json::json!({})).await
    }

    /// A build-job grant: a URL reading `req.bucket`/`req.name`, a
    /// registry credential for the requested repositories and, with
    /// `req.with_keys`, storage keys limited to reading that object, each
    /// narrowed by the platform and expiring after `req.ttl`. Everything is
    /// checked before anything is issued; a part the platform cannot narrow
    /// is refused (kind [`crate::ErrorKind::InvalidInput`] or
    /// [`crate::ErrorKind::Config`], naming what is missing), never handed
    /// out wider unless `req.allow_unscoped_registry` accepts it.
    pub async fn grant(&self, req: &crate::GrantRequest) -> Result<crate::Grant> {
        self.require(Operation::Grant)?;
        req.validate()?;
        let Some(fut) = self.inner.provider.grant(req.to_api()) else { return Err(self.too_old(Operation::Grant)) };
        let granted = match self.call(Operation::Grant, fut, None).await {
            Ok(granted) => crate::Grant::from_api(req, &granted, &self.inner.instance),
            Err(e) => Err(e),
        };
        let fields = serde_json::json!({
            "object": { "bucket": req.bucket, "name": req.name },
            "repository": req.repository,
            "pull": req.pull,
            "ttl": req.ttl.as_secs(),
            "with_keys": req.with_keys,
        });
        self.audited("grant", fields, granted, |g, log| {
            serde_json::json!({
                "expires_at": crate::grant::rfc3339(crate::types::unix_seconds(g.expires_at)),
                "registry_scope": g.registry_scope.map(|s| s.as_str()),
                "entries": entries_issued(&g.entries, log),
            })
        })
        .await
    }

    /// Registry credentials of a workload's own identity for `registry` (a
    /// host; the instance's own registry when `None`), from the workload's
    /// service-account token: the platform verifies the token and answers
    /// with what that identity may pull. Never cached here (the kubelet
    /// caches per service account or token), and never answered with the
    /// instance's own credentials: a plugin without workload identity is
    /// refused (kind [`crate::ErrorKind::Unsupported`]).
    pub async fn workload_registry_auth(
        &self,
        registry: Option<&str>,
        workload: &crate::kubelet::Workload,
    ) -> Result<Option<RegistryAuth>> {
        self.require(Operation::WorkloadIdentity)?;
        let host = registry.map(crate::patterns::checked_host).transpose()?;
        let asked =
            host.as_deref().and_then(|h| self.inner.served.read().unwrap_or_else(|p| p.into_inner()).request_for(h));
        let req = credhost_plugin_api::WorkloadAuthRequest {
            registry: RegistryRequest::for_registry(asked.as_deref()).with_auth_form(AuthForm::Basic.to_api()),
            token: credhost_plugin_api::Secret::new(workload.token.expose()),
            namespace: workload.namespace.as_str().into(),
            service_account: workload.service_account.as_str().into(),
            annotations: workload.annotations.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect(),
            extra: Extra::new(),
        };
        let Some(fut) = self.inner.provider.workload_registry_auth(req) else {
            return Err(self.too_old(Operation::WorkloadIdentity));
        };
        let auth = self.call(Operation::WorkloadIdentity, fut, None).await.map(|auth| {
            auth.into_option().map(|a| {
                let mut a = RegistryAuth::from_api(&a);
                if let Some(host) = &host {
                    a.server = host.clone();
                }
                a
            })
        });
        let fields = serde_json::json!({
            "registry": host,
            "namespace": workload.namespace,
            "service_account": workload.service_account,
            "workload_identity": true,
        });
        self.audited("kubelet", fields, auth, |auth, log| auth_issued(auth.as_ref(), log)).await
    }

    fn too_old(&self, op: Operation) -> Error {
        Error::Unsupported {
            instance: self.inner.instance.clone(),
            op: op.description(),
            why: format!("plugin `{}` implements plugin interface {}", self.inner.plugin, self.inner.interface),
        }
    }

    /// The plugin's live probe.
    pub async fn check(&self) -> Result<CheckReport> {
        self.require(Operation::Check)?;
        let report = self.call(Operation::Check, self.inner.provider.check(CheckRequest::default()), None).await?;
        let mut report = CheckReport::from_api(&report);
        // The canary is written only to a store whose own probes passed.
        if report.ok() && self.inner.info.create_only && self.offers(Operation::Upload) {
            let then = if self.inner.create_only_best_effort {
                "--if-absent looks first, then writes (create_only = \"best-effort\": racy)"
            } else {
                "--if-absent is refused (set create_only = \"best-effort\" to look first, then write)"
            };
            let (ok, detail) = match self.create_only_support().await {
                Ok(CreateOnlySupport::Enforced) => (true, "enforced (by the store)".to_owned()),
                Ok(CreateOnlySupport::EnforcedMultiPartUnknown) => (true, "enforced (by the store) on single-request uploads; the plugin cannot be asked to probe its multi-part uploads".to_owned()),
                Ok(CreateOnlySupport::Ignored) => (true, format!("ignored by this store: {then}")),
                Ok(CreateOnlySupport::IgnoredOnMultiPart) => (true, format!("ignored by this store on multi-part uploads (enforced on single-request ones and presigned PUTs): {then}")),
                // Informational: an identity that may not write (a reader,
                // a presigner) is not a failed store.
                Err(e) => (true, format!("not known: writing the canary {CREATE_ONLY_CANARY} failed: {}", crate::one_line(&e.to_string()))),
            };
            report.items.push(crate::CheckItem { component: "create-only".into(), ok, detail });
        }
        if let Some(audit) = &self.inner.audit {
            let log = audit.log.clone();
            let probed = tokio::task::spawn_blocking(move || log.probe()).await;
            let settings = audit.log.settings();
            let required = if settings.required { "required" } else { "not required" };
            let (ok, detail) = match (&settings.path, probed) {
                (crate::audit::AuditPath::Stderr, _) => (true, format!("standard error ({required})")),
                (path, Ok(Ok(()))) => (true, format!("{path} can be appended to ({required})")),
                (path, Ok(Err(e))) => {
                    (!settings.required, format!("{path}: cannot be opened for appending: {e} ({required})"))
                }
                (path, Err(e)) => (!settings.required, format!("{path}: not probed: {e}")),
            };
            report.items.push(crate::CheckItem { component: "audit log".into(), ok, detail });
        }
        if let Some(state) = self.process_state() {
            report.items.push(crate::CheckItem {
                component: "plugin process".into(),
                ok: true,
                detail: state.describe(),
            });
        }
        Ok(report)
    }

    /// Waits (at most `timeout`) for the clean-up work of cancelled
    /// operations to finish. Call it after dropping an operation's future
    /// when the process is about to exit, so that nothing partial is left
    /// behind. Returns whether the plugin became idle in time.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let idle = Guarded(Some(self.inner.provider.wait_idle()));
        matches!(tokio::time::timeout(timeout, idle).await, Ok(Ok(RResult::ROk(()))))
    }

    /// Before the process exits: [`ProviderHandle::wait_idle`], and with
    /// `isolation = "process"` then stops the plugin's child and waits for
    /// it to end, all within `timeout`, so that no child outlives the
    /// process (and its use of resources is counted as this process's
    /// children's). The handle stays usable: a later call starts a new
    /// child. Returns whether everything ended in time.
    pub async fn close(&self, timeout: Duration) -> bool {
        let started = std::time::Instant::now();
        let idle = self.wait_idle(timeout).await;
        match &self.inner.provider {
            AnyProvider::Process(p) => p.stop(timeout.saturating_sub(started.elapsed())).await && idle,
            _ => idle,
        }
    }
}

/// `(major, minor)` of an interface version such as `1.1` (`1.10` after `1.9`).
fn minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}
