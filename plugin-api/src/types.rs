//! Requests and responses of the provider methods.
//!
//! Released structs never change layout: each carries an `extra` string map
//! through which later versions pass new options and results.

use std::fmt;

use abi_stable::{
    sabi_trait,
    std_types::{RBox, RHashMap, ROption, RSlice, RSliceMut, RString, RVec},
    StableAbi,
};
use base64::Engine as _;

use crate::{PResult, Secret};

/// Extra options or results, keyed by name; unknown keys are ignored.
pub type Extra = RHashMap<RString, RString>;

/// Which registry to authenticate to.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RegistryRequest {
    /// Registry host (`host[:port]`); `None` means the plugin's own
    /// registry. Hosts since credhost's kit 1.1 send `None` as well for a
    /// host the configuration maps to the instance (its `registries` list,
    /// `[registries]`), and name only hosts it does not map there.
    pub registry: ROption<RString>,
    /// Known keys: `scope` (a registry token scope such as
    /// `repository:demo:pull,push`), `repository` (shorthand for that scope).
    pub extra: Extra,
}

/// Credentials for a container registry.
#[repr(C)]
#[derive(StableAbi, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RegistryAuth {
    /// The registry host these credentials are for (`host[:port]`, no scheme).
    pub server: RString,
    /// User name to present (for bearer tokens: the user the token was issued to).
    pub username: RString,
    /// The password or token.
    pub secret: Secret,
    /// Unix time (seconds) after which the secret stops working, when known.
    pub expires_at: ROption<i64>,
    /// Known keys: `kind` = `basic` (username + password) or `bearer` (the secret
    /// is a registry bearer token).
    pub extra: Extra,
}

impl RegistryAuth {
    /// The `REGISTRY_TOKEN` form that build jobs expect: base64 of
    /// `username:secret`, as ECR's authorization token.
    pub fn registry_token(&self) -> Secret {
        let mut joined = String::with_capacity(self.username.len() + 1 + self.secret.expose().len());
        joined.push_str(&self.username);
        joined.push(':');
        joined.push_str(self.secret.expose());
        let token = base64::engine::general_purpose::STANDARD.encode(joined.as_bytes());
        zeroize::Zeroize::zeroize(&mut joined);
        Secret::new(token)
    }
}

crate::debug_fields!(RegistryAuth { server, username, secret, expires_at });

/// A blocking source of bytes implemented by the host (a pipe, a request body).
///
/// Plugins call it from a thread where blocking is allowed, never from async code.
#[sabi_trait]
pub trait ByteSource: Send {
    /// Fills the start of `buf` and returns how many bytes were written; 0 means
    /// the end of the data. An error aborts the upload.
    #[sabi(last_prefix_field)]
    fn read(&mut self, buf: RSliceMut<'_, u8>) -> PResult<usize>;
}

/// An owned [`ByteSource`] trait object.
pub type ByteSourceBox = ByteSource_TO<'static, RBox<()>>;

/// A blocking sink of bytes implemented by the host.
#[sabi_trait]
pub trait ByteSink: Send {
    /// Writes all of `buf` or fails.
    fn write(&mut self, buf: RSlice<'_, u8>) -> PResult<()>;
    /// Called once after the last write, when the whole object was delivered
    /// and verified. A sink that never sees `finish` holds incomplete data.
    #[sabi(last_prefix_field)]
    fn finish(&mut self) -> PResult<()>;
}

/// An owned [`ByteSink`] trait object.
pub type ByteSinkBox = ByteSink_TO<'static, RBox<()>>;

/// Progress of one transfer, reported by the plugin.
#[sabi_trait]
pub trait Progress: Send + Sync {
    /// The total number of bytes, once known.
    fn set_total(&self, total: u64);
    /// `bytes` more bytes were transferred.
    #[sabi(last_prefix_field)]
    fn advance(&self, bytes: u64);
}

/// An owned [`Progress`] trait object.
pub type ProgressBox = Progress_TO<'static, RBox<()>>;

/// Where the bytes of an upload come from.
#[repr(u8)]
#[derive(StableAbi)]
pub enum UploadSource {
    /// A local file: the fast path, the plugin may read parts in parallel.
    Path(RString),
    /// A stream of unknown length.
    Stream(ByteSourceBox),
}

/// Upload a project archive into the plugin's projects bucket.
#[repr(C)]
#[derive(StableAbi)]
pub struct UploadRequest {
    /// The object name (validated by the host).
    pub name: RString,
    /// The bytes.
    pub source: UploadSource,
    /// Size in bytes when known in advance (always for paths).
    pub size_hint: ROption<u64>,
    /// Progress reporting, when the host wants it.
    pub progress: ROption<ProgressBox>,
    /// Known keys: `content_type`.
    pub extra: Extra,
}

/// Where a download goes.
#[repr(u8)]
#[derive(StableAbi)]
pub enum DownloadDest {
    /// Write the whole object to this file (created or truncated). The host
    /// passes a temporary path and renames it once the call succeeded.
    Path(RString),
    /// Stream into a host sink.
    Sink(ByteSinkBox),
}

/// Download a project archive.
#[repr(C)]
#[derive(StableAbi)]
pub struct DownloadRequest {
    /// Bucket to read from.
    pub bucket: RString,
    /// Object name.
    pub name: RString,
    /// Where the bytes go.
    pub dest: DownloadDest,
    /// Progress reporting, when the host wants it.
    pub progress: ROption<ProgressBox>,
    /// Reserved for later options.
    pub extra: Extra,
}

/// The outcome of an upload or download.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TransferResult {
    /// Bucket the object is in.
    pub bucket: RString,
    /// Object name.
    pub name: RString,
    /// Size in bytes.
    pub size: u64,
    /// `algorithm:hex`, e.g. `crc32c:1a2b3c4d`, of the whole content.
    pub checksum: RString,
    /// Known keys: `location` (a URL or path describing where the object is).
    pub extra: Extra,
}

/// Ask for the entries a build job needs.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CredentialsRequest {
    /// Reserved for later options.
    pub extra: Extra,
}

/// One environment-style entry for a build job.
#[repr(C)]
#[derive(StableAbi, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CredentialEntry {
    /// Variable name, e.g. `AWS_ACCESS_KEY_ID`.
    pub key: RString,
    /// Its value; held as a secret whatever `secret` says, so it is wiped on drop.
    pub value: Secret,
    /// Whether the value must be redacted unless the user asks to see it.
    pub secret: bool,
}

impl fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CredentialEntry");
        d.field("key", &self.key);
        if self.secret {
            d.field("value", &self.value);
        } else {
            d.field("value", &self.value.expose());
        }
        d.field("secret", &self.secret).finish()
    }
}

/// Ask for a live probe.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CheckRequest {
    /// Reserved for later options.
    pub extra: Extra,
}

/// One probe of `check`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CheckItem {
    /// What was probed, e.g. `storage` or `registry`.
    pub component: RString,
    /// Whether it answered as expected.
    pub ok: bool,
    /// What was found, one line.
    pub detail: RString,
}

/// The outcome of `check`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CheckReport {
    /// Every probe that ran.
    pub items: RVec<CheckItem>,
    /// Reserved.
    pub extra: Extra,
}

impl CheckReport {
    /// Whether every probe passed.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }
}

impl RegistryAuth {
    /// Credentials for `server`: `username` with `secret`, valid until `expires_at` (Unix seconds) when known.
    pub fn new(
        server: impl Into<String>,
        username: impl Into<String>,
        secret: Secret,
        expires_at: Option<i64>,
    ) -> Self {
        Self {
            server: RString::from(server.into()),
            username: RString::from(username.into()),
            secret,
            expires_at: expires_at.into(),
            extra: Extra::new(),
        }
    }
}

impl TransferResult {
    /// The outcome for `bucket`/`name`: `size` bytes with `checksum` (`algorithm:hex`).
    pub fn new(bucket: impl Into<String>, name: impl Into<String>, size: u64, checksum: impl Into<String>) -> Self {
        Self {
            bucket: RString::from(bucket.into()),
            name: RString::from(name.into()),
            size,
            checksum: RString::from(checksum.into()),
            extra: Extra::new(),
        }
    }
}

impl CredentialEntry {
    /// An entry shown as is.
    pub fn plain(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: RString::from(key.into()), value: Secret::new(value), secret: false }
    }

    /// An entry redacted unless the user asks to see secrets.
    pub fn secret(key: impl Into<String>, value: Secret) -> Self {
        Self { key: RString::from(key.into()), value, secret: true }
    }
}

impl CheckItem {
    /// A passed probe.
    pub fn ok(component: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { component: RString::from(component.into()), ok: true, detail: RString::from(detail.into()) }
    }

    /// A failed probe.
    pub fn failed(component: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { component: RString::from(component.into()), ok: false, detail: RString::from(detail.into()) }
    }
}

// ---- interface 1.1 ------------------------------------------------------

/// What a presigned URL lets its holder do.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PresignMethod(pub u8);

impl PresignMethod {
    /// Read an object (HTTP GET).
    pub const GET: Self = Self(0);
    /// Store an object (HTTP PUT).
    pub const PUT: Self = Self(1);

    /// `GET` or `PUT`.
    pub fn as_str(self) -> &'static str {
        if self == Self::PUT {
            "PUT"
        } else {
            "GET"
        }
    }
}

/// Ask for a presigned URL (since 1.1).
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PresignRequest {
    /// GET an existing object, or PUT a new one.
    pub method: PresignMethod,
    /// The bucket (for PUT: the projects bucket, filled in by the plugin when empty).
    pub bucket: RString,
    /// The object name (validated by the host).
    pub name: RString,
    /// How long the URL works, in seconds (at most 7 days).
    pub expires_secs: u64,
    /// Reserved for later options.
    pub extra: Extra,
}

/// One HTTP header a client must send with a presigned URL.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Header {
    /// Its name.
    pub name: RString,
    /// Its value.
    pub value: RString,
}

/// A presigned URL (since 1.1). The URL is a credential: it is a [`Secret`].
#[repr(C)]
#[derive(StableAbi, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Presigned {
    /// `GET` or `PUT`.
    pub method: RString,
    /// The URL.
    pub url: Secret,
    /// Headers the client must send (e.g. a content type the signature covers).
    pub headers: RVec<Header>,
    /// Unix time (seconds) after which the URL stops working.
    pub expires_at: i64,
    /// Reserved for later results.
    pub extra: Extra,
}

crate::debug_fields!(Presigned { method, url, headers, expires_at });

/// Delete an object (since 1.1).
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeleteRequest {
    /// The bucket.
    pub bucket: RString,
    /// The object name (validated by the host).
    pub name: RString,
    /// Reserved for later options.
    pub extra: Extra,
}

// ---- interface 1.2 ------------------------------------------------------

/// Ask for a build-job grant (since 1.2): what one job needs, narrowed by the
/// platform and short-lived. A plugin never answers with more than it was
/// asked for without saying so in the grant's [`GrantPart`]s, and refuses
/// (kind `unsupported` or `config`, naming what is missing) what it cannot
/// narrow, unless `allow_unscoped_registry` accepts a registry-wide token.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GrantRequest {
    /// The bucket of the project object (the projects bucket when empty).
    pub bucket: RString,
    /// The project object the job may read (validated by the host).
    pub name: RString,
    /// The repository the job may push to (and pull from), if any.
    pub repository: ROption<RString>,
    /// Repositories the job may pull from.
    pub pull: RVec<RString>,
    /// How long the grant works, in seconds (the host checks 900..=43200).
    pub ttl_secs: u64,
    /// Also hand storage credentials narrowed to the object, read-only.
    pub with_keys: bool,
    /// Accept a registry credential wider than the repositories asked for
    /// when the registry cannot narrow one; the grant then says so.
    pub allow_unscoped_registry: bool,
    /// Who the grant is for (a job or project name, `[A-Za-z0-9_=,.@-]`,
    /// at most 64 characters): session names, audit records.
    pub session_name: RString,
    /// Reserved for later options.
    pub extra: Extra,
}

/// What one part of a grant is limited to (since 1.2).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GrantPart {
    /// Which part: `project` (the URL), `registry`, `keys`.
    pub part: RString,
    /// How narrow it is: `object`, `repository`, `registry`, `none` (the part
    /// is absent), or a platform word.
    pub scope: RString,
    /// What it allows, for people, one line without secrets
    /// (`s3:GetObject on arn:aws:s3:::projects/app.zip`).
    pub detail: RString,
    /// Unix time (seconds) after which the part stops working, when known.
    pub expires_at: ROption<i64>,
    /// Reserved for later results.
    pub extra: Extra,
}

/// A build-job grant (since 1.2). The host turns it into the job's entries
/// (`PROJECT_URL`, `REGISTRY`, `REGISTRY_TOKEN`, `DOCKER_CONFIG_JSON`, ...).
#[repr(C)]
#[derive(StableAbi, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Grant {
    /// A presigned GET of the project object, expiring with the grant;
    /// `None` when the store has no URLs (a shared filesystem).
    pub project_url: ROption<Secret>,
    /// Registry credentials narrowed to the requested repositories (or
    /// wider, when accepted and said in `parts`); `None` without a registry.
    pub registry: ROption<RegistryAuth>,
    /// Further entries: storage keys asked for with `with_keys`, the
    /// region, a shared directory's path. Secrets marked.
    pub entries: RVec<CredentialEntry>,
    /// What each part is limited to.
    pub parts: RVec<GrantPart>,
    /// Unix time (seconds) after which the grant stops working: the
    /// earliest expiry of its parts.
    pub expires_at: i64,
    /// Reserved for later results.
    pub extra: Extra,
}

crate::debug_fields!(Grant { project_url, registry, entries, parts, expires_at });

impl GrantPart {
    /// A part limited to `scope`, described by `detail`.
    pub fn new(part: &str, scope: &str, detail: impl Into<String>, expires_at: Option<i64>) -> Self {
        Self {
            part: part.into(),
            scope: scope.into(),
            detail: RString::from(detail.into()),
            expires_at: expires_at.into(),
            extra: Extra::new(),
        }
    }
}

// ---- interface 1.3 ------------------------------------------------------

/// Ask for a workload's registry credentials (since 1.3): a kubelet pulling
/// for a pod whose service account carries its own identity on the
/// platform (KEP-4412). The plugin exchanges `token` at the platform (which
/// verifies it) for that identity's credentials, narrowed as the
/// annotations say; it never answers with its own credentials instead, and
/// never hands the token back as a password.
#[repr(C)]
#[derive(StableAbi, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WorkloadAuthRequest {
    /// The registry, as for [`crate::Provider::registry_auth`].
    pub registry: RegistryRequest,
    /// The service-account token the kubelet projected for the pod (a
    /// JWT for the audience the kubelet configuration names).
    pub token: Secret,
    /// The namespace and the service account, from the token's `sub` claim
    /// (`system:serviceaccount:NAMESPACE:NAME`), read by the host without
    /// verifying the token: for names (sessions, logs), never for trust.
    pub namespace: RString,
    /// See `namespace`.
    pub service_account: RString,
    /// The service account's annotations the kubelet passed (the keys its
    /// configuration lists), e.g. `credhost.io/role-arn`.
    pub annotations: RHashMap<RString, RString>,
    /// Reserved for later options.
    pub extra: Extra,
}

crate::debug_fields!(WorkloadAuthRequest { registry, token, namespace, service_account, annotations });

/// The service-account annotations plugins read (since 1.3).
pub mod annotations {
    /// The AWS role a workload's pulls assume (`aws`).
    pub const ROLE_ARN: &str = "credhost.io/role-arn";
    /// The repositories a workload may pull, comma-separated: the session
    /// is narrowed to them (`aws`).
    pub const PULL: &str = "credhost.io/pull";
    /// The Google service account a workload's pulls act as (`gcp`).
    pub const SERVICE_ACCOUNT: &str = "credhost.io/service-account";
}
