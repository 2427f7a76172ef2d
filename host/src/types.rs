//! What the library answers, in plain Rust types: every front end (the
//! CLI, the Python package, a service embedding the library) uses these as
//! they are, and serializes them the same way. Secrets are [`Secret`]s,
//! written as a redaction marker unless revealed ([`crate::Revealed`]);
//! times serialize as Unix seconds.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use credhost_plugin_api as api;
use serde::{Serialize, Serializer};

use crate::Secret;

/// Unix seconds as a time (clamped to the epoch for times before it).
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// A time as Unix seconds.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn unix<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(unix_seconds(*t))
}

pub(crate) fn unix_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&unix_seconds(*t)),
        None => s.serialize_none(),
    }
}

/// What form of registry credentials a caller can hand on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AuthForm {
    /// Any credentials, registry bearer tokens included.
    #[default]
    Any,
    /// Only a user name and password: docker credential helpers and
    /// `auths` entries of a docker config, which cannot carry a registry
    /// bearer token. A plugin that would answer with a bearer token answers
    /// with the user name and password it exchanges for tokens instead.
    Basic,
}

impl AuthForm {
    pub(crate) fn to_api(self) -> api::AuthForm {
        match self {
            AuthForm::Any => api::AuthForm::Any,
            AuthForm::Basic => api::AuthForm::Basic,
        }
    }
}

/// What the secret of a [`RegistryAuth`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// A password (or a token used as one) for HTTP basic authentication.
    Basic,
    /// A registry bearer token.
    Bearer,
}

impl AuthKind {
    /// `basic` or `bearer`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Basic => "basic",
            AuthKind::Bearer => "bearer",
        }
    }
}

/// Credentials for a container registry.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct RegistryAuth {
    /// The registry they are for: the host that was asked for
    /// (`host[:port]`, normalized: lower case, no scheme or path); for the
    /// instance's own registry (none asked for), as its plugin names it.
    pub server: String,
    /// The user name to present.
    pub username: String,
    /// The password or token.
    #[serde(rename = "password")]
    pub secret: Secret,
    /// When the secret stops working, when known.
    #[serde(serialize_with = "unix_opt")]
    pub expires_at: Option<SystemTime>,
    /// What the secret is (a plugin that does not say answers a password).
    pub kind: AuthKind,
}

credhost_plugin_api::debug_fields!(RegistryAuth { server, username, secret, expires_at, kind });

impl RegistryAuth {
    /// The `REGISTRY_TOKEN` form that build jobs expect: base64 of
    /// `username:secret`, as ECR's authorization token.
    pub fn registry_token(&self) -> Secret {
        use base64::Engine as _;
        let joined = zeroize::Zeroizing::new(format!("{}:{}", self.username, self.secret.expose()));
        Secret::new(base64::engine::general_purpose::STANDARD.encode(joined.as_bytes()))
    }

    pub(crate) fn from_api(a: &api::RegistryAuth) -> Self {
        let kind = match a.kind() {
            Some(api::AuthKind::Bearer) => AuthKind::Bearer,
            _ => AuthKind::Basic,
        };
        Self {
            server: a.server.to_string(),
            username: a.username.to_string(),
            secret: Secret::new(a.secret.expose()),
            expires_at: a.expires_at.into_option().map(from_unix),
            kind,
        }
    }
}

/// Where an upload or download left an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransferResult {
    /// The bucket the object is in.
    pub bucket: String,
    /// The object name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// `algorithm:hex` of the whole content, e.g. `crc32c:1a2b3c4d`.
    pub checksum: String,
    /// Where the object is, as a URL (`s3://b/k`, `gs://b/k`) or a path, when the plugin says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The store's version of the object (a GCS generation), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// For a create-only upload, how the name was kept from being taken
    /// twice: `enforced` (by the store, atomically) or `best-effort` (looked
    /// for, then written: racy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_only: Option<String>,
}

impl TransferResult {
    pub(crate) fn from_api(r: &api::TransferResult) -> Self {
        Self {
            bucket: r.bucket.to_string(),
            name: r.name.to_string(),
            size: r.size,
            checksum: r.checksum.to_string(),
            location: r.location().map(str::to_owned),
            generation: r.generation().map(str::to_owned),
            create_only: None,
        }
    }
}

/// One environment-style entry for a build job.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialEntry {
    /// The variable name, e.g. `AWS_ACCESS_KEY_ID`.
    pub key: String,
    /// Its value; held as a secret whatever `secret` says, so it is wiped on drop.
    pub value: Secret,
    /// Whether the value must be redacted unless the user asks to see it.
    pub secret: bool,
}

impl CredentialEntry {
    /// An entry shown as is.
    pub fn plain(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: key.into(), value: Secret::new(value), secret: false }
    }

    /// An entry redacted unless the user asks to see secrets.
    pub fn secret(key: impl Into<String>, value: Secret) -> Self {
        Self { key: key.into(), value, secret: true }
    }

    pub(crate) fn from_api(e: &api::CredentialEntry) -> Self {
        Self { key: e.key.to_string(), value: Secret::new(e.value.expose()), secret: e.secret }
    }
}

/// A plain entry's value is shown as is; a secret one as [`Secret`] is.
impl std::fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain;
        let value: &dyn std::fmt::Debug = if self.secret {
            &self.value
        } else {
            plain = self.value.expose();
            &plain
        };
        f.debug_struct("CredentialEntry").field("key", &self.key).field("value", value).finish()
    }
}

/// A plain entry's value is written as is; a secret one as [`Secret`] is.
impl Serialize for CredentialEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("CredentialEntry", 3)?;
        s.serialize_field("key", &self.key)?;
        if self.secret {
            s.serialize_field("value", &self.value)?;
        } else {
            s.serialize_field("value", self.value.expose())?;
        }
        s.serialize_field("secret", &self.secret)?;
        s.end()
    }
}

/// The state of an instance's plugin process (`isolation = "process"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessState {
    /// The running child's pid; `None` while none runs (idle, or between
    /// a crash and the next call).
    pub pid: Option<u32>,
    /// Calls failed by a dying child since the last answered call.
    pub crashes_in_a_row: u32,
    /// How the last child that failed a call ended (`SIGSEGV`, `exit
    /// status 0`).
    pub last_exit: Option<String>,
    /// How long the next start still waits, after crashes in a row (in
    /// serialized form: seconds).
    #[serde(serialize_with = "seconds")]
    pub next_start_waits: Option<std::time::Duration>,
}

fn seconds<S: serde::Serializer>(d: &Option<std::time::Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl ProcessState {
    /// One line: `pid 1234`, `not running`, with the crashes when there are.
    pub fn describe(&self) -> String {
        let mut text = match self.pid {
            Some(pid) => format!("pid {pid}"),
            None => "not running (starts on the next call)".to_owned(),
        };
        if self.crashes_in_a_row > 0 {
            text.push_str(&format!(
                "; {} crash(es) in a row, the last: {}",
                self.crashes_in_a_row,
                self.last_exit.as_deref().unwrap_or("unknown")
            ));
        }
        if let Some(wait) = self.next_start_waits {
            text.push_str(&format!("; the next start waits {:.2} s", wait.as_secs_f64()));
        }
        text
    }
}

/// One probe of a provider's `check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    /// What was probed, e.g. `storage` or `registry`.
    pub component: String,
    /// Whether it answered as expected.
    pub ok: bool,
    /// What was found, on one line.
    pub detail: String,
}

/// The outcome of a provider's `check`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Every probe that ran.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// Whether every probe passed.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }

    /// The failed probes, as `component: detail`.
    pub fn failures(&self) -> Vec<String> {
        self.items.iter().filter(|i| !i.ok).map(|i| format!("{}: {}", i.component, i.detail)).collect()
    }

    pub(crate) fn from_api(r: &api::CheckReport) -> Self {
        let items = r
            .items
            .iter()
            .map(|i| CheckItem { component: i.component.to_string(), ok: i.ok, detail: i.detail.to_string() })
            .collect();
        Self { items }
    }
}

/// What a presigned URL lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PresignMethod {
    /// Read an object (HTTP GET).
    #[serde(rename = "GET")]
    Get,
    /// Store an object (HTTP PUT).
    #[serde(rename = "PUT")]
    Put,
}

impl PresignMethod {
    /// `GET` or `PUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            PresignMethod::Get => "GET",
            PresignMethod::Put => "PUT",
        }
    }

    pub(crate) fn to_api(self) -> api::PresignMethod {
        match self {
            PresignMethod::Get => api::PresignMethod::GET,
            PresignMethod::Put => api::PresignMethod::PUT,
        }
    }
}

impl std::str::FromStr for PresignMethod {
    type Err = String;

    /// `GET` or `PUT`, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "GET" => Ok(PresignMethod::Get),
            "PUT" => Ok(PresignMethod::Put),
            _ => Err(format!("a presigned URL is for GET or PUT, not {s:?}")),
        }
    }
}

/// A time-limited URL. The URL is a credential: it is a [`Secret`].
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Presigned {
    /// `GET` or `PUT`.
    pub method: PresignMethod,
    /// The URL.
    pub url: Secret,
    /// Headers the client must send with it (e.g. a content type the
    /// signature covers), by name.
    pub headers: BTreeMap<String, String>,
    /// When the URL stops working.
    #[serde(serialize_with = "unix")]
    pub expires_at: SystemTime,
}

credhost_plugin_api::debug_fields!(Presigned { method, url, headers, expires_at });

impl Presigned {
    pub(crate) fn from_api(p: &api::Presigned, asked: PresignMethod) -> Self {
        let method = p.method.as_str().parse().unwrap_or(asked);
        Self {
            method,
            url: Secret::new(p.url.expose()),
            headers: p.headers.iter().map(|h| (h.name.to_string(), h.value.to_string())).collect(),
            expires_at: from_unix(p.expires_at),
        }
    }
}

/// What a store does with create-only writes, as its canary showed
/// ([`ProviderHandle::create_only_support`](crate::ProviderHandle::create_only_support)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateOnlySupport {
    /// Refused on every upload path probed.
    Enforced,
    /// Refused on single-request uploads; the plugin cannot be asked for its
    /// multi-part path, so that path is not known.
    EnforcedMultiPartUnknown,
    /// Ignored: the canary was overwritten.
    Ignored,
    /// Refused on single-request uploads (and so on presigned PUTs), ignored
    /// on multi-part ones (fake-gcs-server's resumable sessions).
    IgnoredOnMultiPart,
}

impl CreateOnlySupport {
    /// Whether every create-only upload is refused when its name exists.
    pub fn enforced(self) -> bool {
        matches!(self, Self::Enforced | Self::EnforcedMultiPartUnknown)
    }
}

/// An operation a provider may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Operation {
    /// Registry credentials.
    Registry,
    /// Uploading a project.
    Upload,
    /// Downloading a project.
    Download,
    /// Build-job credentials.
    Credentials,
    /// The live probe.
    Check,
    /// Presigned URLs (interface 1.1).
    Presign,
    /// Deleting a project (interface 1.1).
    Delete,
    /// Build-job grants (interface 1.2).
    Grant,
    /// Registry credentials of a workload's own identity: a kubelet's
    /// request carrying a service-account token (interface 1.3).
    WorkloadIdentity,
}

impl Operation {
    /// Every operation, in the order plugins list them.
    pub const ALL: [Operation; 9] = [
        Operation::Registry,
        Operation::Upload,
        Operation::Download,
        Operation::Credentials,
        Operation::Check,
        Operation::Presign,
        Operation::Delete,
        Operation::Grant,
        Operation::WorkloadIdentity,
    ];

    /// The short name `credhost plugins` shows: `registry`, `upload`, ...
    pub fn name(self) -> &'static str {
        match self {
            Operation::Registry => "registry",
            Operation::Upload => "upload",
            Operation::Download => "download",
            Operation::Credentials => "credentials",
            Operation::Check => "check",
            Operation::Presign => "presign",
            Operation::Delete => "delete",
            Operation::Grant => "grant",
            Operation::WorkloadIdentity => "workload-identity",
        }
    }

    /// What errors call it: `registry credentials`, `presigned URLs`, ...
    pub fn description(self) -> &'static str {
        match self {
            Operation::Registry => "registry credentials",
            Operation::Upload => "upload",
            Operation::Download => "download",
            Operation::Credentials => "credentials",
            Operation::Check => "check",
            Operation::Presign => "presigned URLs",
            Operation::Delete => "delete",
            Operation::Grant => "build-job grants",
            Operation::WorkloadIdentity => "workload registry credentials (service-account tokens)",
        }
    }

    /// The interface minor that introduced it.
    pub fn since(self) -> &'static str {
        match self {
            Operation::Presign | Operation::Delete => "1.1",
            Operation::Grant => "1.2",
            Operation::WorkloadIdentity => "1.3",
            _ => "1.0",
        }
    }

    pub(crate) fn capability(self) -> api::Capabilities {
        match self {
            Operation::Registry => api::Capabilities::REGISTRY,
            Operation::Upload => api::Capabilities::UPLOAD,
            Operation::Download => api::Capabilities::DOWNLOAD,
            Operation::Credentials => api::Capabilities::CREDENTIALS,
            Operation::Check => api::Capabilities::CHECK,
            Operation::Presign => api::Capabilities::PRESIGN,
            Operation::Delete => api::Capabilities::DELETE,
            Operation::Grant => api::Capabilities::GRANT,
            Operation::WorkloadIdentity => api::Capabilities::WORKLOAD_IDENTITY,
        }
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Operation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Operation::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown operation {name:?}")))
    }
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PluginInfo {
    /// The plugin's name (`[plugins.NAME]`, or `plugin = "NAME"`).
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The plugin interface version it was built against, e.g. `1.1.0`.
    pub api_version: String,
    /// The interface minor the host speaks with it (`1.0`, `1.1`).
    pub interface: String,
    /// What it offers.
    pub capabilities: Vec<Operation>,
    /// One line describing it, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its panic strategy as compiled (`unwind` or `abort`), when it records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic: Option<String>,
    /// The dotted path of the setting naming the registry an instance serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_setting: Option<String>,
    /// Environment variables (or `PREFIX*`) its credentials depend on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_env: Vec<String>,
    /// Dotted paths of settings naming environment variables that hold credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_env_settings: Vec<String>,
    /// Whether it honours create-only uploads (`--if-absent`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_only: bool,
    /// Whether it can be asked to write by its store's multi-part path
    /// whatever the size (so that both paths' create-only checks are probed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multi_part: bool,
}

impl PluginInfo {
    /// The library's account of what a loaded plugin returned.
    pub fn from_api(info: &api::PluginInfo, interface: &str) -> Self {
        Self {
            name: info.name.to_string(),
            version: info.version.to_string(),
            api_version: info.api_version.to_string(),
            interface: interface.to_owned(),
            capabilities: Operation::ALL.into_iter().filter(|op| info.capabilities.contains(op.capability())).collect(),
            description: info.description().map(str::to_owned),
            panic: info.panic_strategy().map(str::to_owned),
            registry_setting: info.registry_setting().map(str::to_owned),
            identity_env: info.identity_env(),
            identity_env_settings: info.identity_env_settings(),
            create_only: info.create_only(),
            multi_part: info.multi_part(),
        }
    }

    /// Whether it offers `op`.
    pub fn offers(&self, op: Operation) -> bool {
        self.capabilities.contains(&op)
    }

    /// The names of what it offers.
    pub fn capability_names(&self) -> Vec<&'static str> {
        self.capabilities.iter().map(|op| op.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_field_sets() {
        let t = TransferResult {
            bucket: "projects".into(),
            name: "1.zip".into(),
            size: 3,
            checksum: "crc32c:00000000".into(),
            location: None,
            generation: None,
            create_only: None,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"bucket":"projects","name":"1.zip","size":3,"checksum":"crc32c:00000000"}"#
        );
        let a = RegistryAuth {
            server: "r:5000".into(),
            username: "u".into(),
            secret: Secret::new("pw"),
            expires_at: Some(from_unix(10)),
            kind: AuthKind::Basic,
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"server":"r:5000","username":"u","password":"<redacted>","expires_at":10,"kind":"basic"}"#
        );
        assert_eq!(a.registry_token().expose(), "dTpwdw==");
        assert_eq!(format!("{a:?}").matches("pw").count(), 0, "{a:?}");
        let p = Presigned {
            method: PresignMethod::Put,
            url: Secret::new("http://x/?X-Amz-Signature=s"),
            headers: [("content-type".to_owned(), "application/zip".to_owned())].into(),
            expires_at: from_unix(5),
        };
        assert_eq!(
            serde_json::to_string(&crate::Revealed(&p)).unwrap(),
            r#"{"method":"PUT","url":"http://x/?X-Amz-Signature=s","headers":{"content-type":"application/zip"},"expires_at":5}"#
        );
        assert!(!format!("{p:?}").contains("Signature"));
        let e = CredentialEntry::secret("K", Secret::new("hunter2"));
        assert_eq!(format!("{e:?}"), r#"CredentialEntry { key: "K", value: Secret(<redacted>) }"#);
        assert_eq!(format!("{:?}", CredentialEntry::plain("K", "v")), r#"CredentialEntry { key: "K", value: "v" }"#);
    }

    #[test]
    fn unix_seconds_round_trip() {
        assert_eq!(unix_seconds(from_unix(1_700_000_000)), 1_700_000_000);
        assert_eq!(unix_seconds(from_unix(-5)), 0);
    }
}
