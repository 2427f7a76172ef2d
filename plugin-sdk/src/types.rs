//! Requests and answers of the [`Provider`](crate::Provider) methods, in std types.

use std::{collections::HashMap, fmt, path::PathBuf, time::Duration};

use crate::{registry_host, unix_now, AuthForm, AuthKind, Progress, Secret, SinkWriter, StreamReader};

/// Which registry to authenticate to, and how.
#[derive(Clone, Debug, Default)]
pub struct RegistryRequest {
    /// `None` for the instance's own registry: the one its
    /// [`Plugin::REGISTRY_SETTING`](crate::Plugin::REGISTRY_SETTING) names,
    /// and also every host the user's configuration maps to the instance
    /// (its `registries = [...]`, `[registries]` entries), which the host
    /// asks for as the instance's own and presents under the mapped name.
    /// `Some(host)` (`host[:port]`, normalized: lower case, no scheme or
    /// path) for a host the configuration does not map to the instance (one
    /// no instance claims, or, when a user names this instance explicitly,
    /// one of another instance): serve it if the platform accepts these
    /// credentials there, else answer `NOT_FOUND`.
    pub registry: Option<String>,
    /// A token scope such as `repository:demo:pull,push`, for registries
    /// that issue scoped tokens.
    pub scope: Option<String>,
    /// What the caller can hand on: [`AuthForm::Basic`] means only a user
    /// name and password (docker credential helpers), never a bearer token.
    pub form: AuthForm,
    /// Options this kit does not know by name.
    pub extra: HashMap<String, String>,
}

impl RegistryRequest {
    /// Whether the request is for `served` (a host or URL): always when no
    /// registry was named, else when both are the same `host[:port]`.
    pub fn is_for(&self, served: &str) -> bool {
        self.registry.as_deref().is_none_or(|r| registry_host(r) == registry_host(served))
    }

    /// `Ok` when the request is for `served` ([`RegistryRequest::is_for`]),
    /// else the [`ErrorKind::NOT_FOUND`](crate::ErrorKind::NOT_FOUND) answer
    /// for a registry this instance does not serve.
    pub fn ensure_for(&self, served: &str) -> crate::Result<()> {
        if self.is_for(served) {
            return Ok(());
        }
        let asked = registry_host(self.registry.as_deref().unwrap_or_default());
        let msg = format!("this instance's registry is {}, not {asked}", registry_host(served));
        Err(crate::Error::new(crate::ErrorKind::NOT_FOUND, msg))
    }
}

/// Credentials for a container registry.
#[derive(Clone)]
pub struct RegistryAuth {
    /// The registry host they are for (`host[:port]`, no scheme).
    pub server: String,
    /// The user name to present.
    pub username: String,
    /// The password or token.
    pub secret: Secret,
    /// Unix time (seconds) after which the secret stops working, when known.
    pub expires_at: Option<i64>,
    /// What the secret is.
    pub kind: AuthKind,
}

impl RegistryAuth {
    /// A user name and password for `server`, with no known expiry.
    pub fn basic(server: impl Into<String>, username: impl Into<String>, secret: Secret) -> Self {
        Self { server: server.into(), username: username.into(), secret, expires_at: None, kind: AuthKind::Basic }
    }

    /// A registry bearer token for `server`, issued to `username`.
    pub fn bearer(server: impl Into<String>, username: impl Into<String>, token: Secret) -> Self {
        Self { kind: AuthKind::Bearer, ..Self::basic(server, username, token) }
    }

    /// Says when the secret stops working (Unix seconds).
    pub fn expires_at(mut self, unix_seconds: i64) -> Self {
        self.expires_at = Some(unix_seconds);
        self
    }

    /// Says the secret stops working `lifetime` from now.
    pub fn expires_in(self, lifetime: Duration) -> Self {
        self.expires_at(crate::expires_in(lifetime))
    }

    /// The `REGISTRY_TOKEN` form build jobs expect: base64 of
    /// `username:secret`, like ECR's authorization token.
    pub fn registry_token(&self) -> Secret {
        credhost_plugin_api::RegistryAuth::new(
            self.server.as_str(),
            self.username.as_str(),
            self.secret.clone(),
            self.expires_at,
        )
        .registry_token()
    }
}

credhost_plugin_api::debug_fields!(RegistryAuth { server, username, secret, expires_at, kind });

/// An upload.
pub struct Upload {
    /// The object name, validated by the host (it may contain `/`).
    pub name: String,
    /// The bytes.
    pub source: Source,
    /// The size in bytes when known in advance (always for paths).
    pub size_hint: Option<u64>,
    /// Progress reporting (does nothing when the host did not ask for it).
    pub progress: Progress,
    /// The media type the caller asked for.
    pub content_type: Option<String>,
    /// Options this kit does not know by name.
    pub extra: HashMap<String, String>,
}

impl Upload {
    /// Whether the object may only be created, never replace one of its
    /// name (see [`crate::Plugin::CREATE_ONLY`]): with
    /// [`CreateOnly::Required`](crate::CreateOnly::Required) the store itself
    /// must refuse the write when the name exists, and a lost race is
    /// [`ErrorKind::ALREADY_EXISTS`](crate::ErrorKind::ALREADY_EXISTS) with
    /// nothing of this upload stored.
    pub fn if_absent(&self) -> Option<crate::CreateOnly> {
        let v = self.extra.get(credhost_plugin_api::keys::IF_ABSENT)?;
        (!v.is_empty()).then(|| crate::CreateOnly::parse(v))
    }

    /// Whether the object is to be written by the store's multi-part path
    /// (an S3 multipart upload, a GCS resumable session) whatever its size:
    /// the host asks so of plugins that declare
    /// [`crate::Plugin::MULTI_PART`], to probe that path's create-only check.
    pub fn multi_part(&self) -> bool {
        self.extra.get(credhost_plugin_api::keys::MULTI_PART).is_some_and(|v| v == "1")
    }
}

/// Where upload bytes come from.
pub enum Source {
    /// A local file: read it in parallel, at offsets, if that helps.
    Path(PathBuf),
    /// A stream of unknown length from the host (a request body, a pipe).
    Stream(StreamReader),
}

/// A download.
pub struct Download {
    /// The bucket to read from.
    pub bucket: String,
    /// The object name.
    pub name: String,
    /// Where the bytes go.
    pub dest: Dest,
    /// Progress reporting (does nothing when the host did not ask for it).
    pub progress: Progress,
    /// Options this kit does not know by name.
    pub extra: HashMap<String, String>,
}

/// Where download bytes go.
pub enum Dest {
    /// A file to create or truncate, in a directory private to this
    /// download; the host renames it into place once the call succeeded.
    Path(PathBuf),
    /// A host sink; it counts as complete only after
    /// [`DestWriter::commit`](crate::DestWriter::commit).
    Sink(SinkWriter),
}

/// An object that was stored or fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The bucket.
    pub bucket: String,
    /// The object name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// `algorithm:hex` of the whole content, e.g. `crc32c:1a2b3c4d`.
    pub checksum: String,
    /// Where it is, as a URL (`s3://bucket/name`) or a path.
    pub location: Option<String>,
    /// The store's version of the object, where it has one.
    pub generation: Option<String>,
}

impl Stored {
    /// `bucket`/`name`, `size` bytes with `checksum`.
    pub fn new(bucket: impl Into<String>, name: impl Into<String>, size: u64, checksum: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            name: name.into(),
            size,
            checksum: checksum.into(),
            location: None,
            generation: None,
        }
    }

    /// Says where the object is.
    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }
}

/// One environment-style entry of a build job.
#[derive(Clone)]
pub struct Entry {
    /// The variable name, e.g. `PROJECTS_BUCKET`.
    pub key: String,
    /// Its value (wiped from memory when dropped).
    pub value: Secret,
    /// Whether the value is redacted unless the user asks to see it.
    pub secret: bool,
}

impl Entry {
    /// An entry shown as it is.
    pub fn plain(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: key.into(), value: Secret::new(value), secret: false }
    }

    /// An entry redacted unless the user asks to see secrets.
    pub fn secret(key: impl Into<String>, value: Secret) -> Self {
        Self { key: key.into(), value, secret: true }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Entry");
        d.field("key", &self.key);
        if self.secret {
            d.field("value", &self.value);
        } else {
            d.field("value", &self.value.expose());
        }
        d.finish()
    }
}

/// One probe of `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// What was probed: `storage` or `registry`.
    pub component: String,
    /// Whether it answered as expected.
    pub ok: bool,
    /// What was found, one line.
    pub detail: String,
}

impl Probe {
    /// A passed probe.
    pub fn ok(component: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { component: component.into(), ok: true, detail: detail.into() }
    }

    /// A failed probe.
    pub fn failed(component: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { component: component.into(), ok: false, detail: detail.into() }
    }
}

/// Unix seconds `lifetime` from now, for [`RegistryAuth::expires_at`].
pub fn expires_in(lifetime: Duration) -> i64 {
    unix_now().saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_compare_hosts_like_the_host() {
        let mut r = RegistryRequest::default();
        assert!(r.is_for("anything"));
        r.registry = Some("https://Reg.Example:5000/".into());
        assert!(r.is_for("http://reg.example:5000"));
        assert!(!r.is_for("reg.example:5001"));
    }

    #[test]
    fn debug_hides_secrets() {
        let a = RegistryAuth::basic("r", "u", Secret::new("hunter2")).expires_in(Duration::from_secs(60));
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(a.expires_at.is_some_and(|t| t > unix_now()));
        let e = Entry::secret("K", Secret::new("hunter2"));
        assert_eq!(format!("{e:?}"), "Entry { key: \"K\", value: Secret(<redacted>) }");
        assert_eq!(format!("{:?}", Entry::plain("K", "v")), "Entry { key: \"K\", value: \"v\" }");
    }
}

/// What a presigned URL lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Read an existing object.
    Get,
    /// Store an object.
    Put,
}

/// Ask for a presigned URL.
#[derive(Clone, Debug)]
pub struct PresignRequest {
    /// GET an existing object, or PUT a new one.
    pub method: Method,
    /// The bucket; for [`Method::Put`] the instance's projects bucket (the
    /// host sends it empty: fill it in).
    pub bucket: String,
    /// The object name, validated by the host.
    pub name: String,
    /// How long the URL works (at most 7 days).
    pub expires: Duration,
    /// Options this kit does not know by name.
    pub extra: HashMap<String, String>,
}

impl PresignRequest {
    /// Whether the URL (a PUT) may only create the object: the signed
    /// request carries the store's precondition (S3 `If-None-Match: *`, GCS
    /// `x-goog-if-generation-match: 0`) among the headers a client must send.
    pub fn if_absent(&self) -> Option<crate::CreateOnly> {
        let v = self.extra.get(credhost_plugin_api::keys::IF_ABSENT)?;
        (!v.is_empty()).then(|| crate::CreateOnly::parse(v))
    }
}

/// A presigned URL. The URL is a credential: whoever holds it can use it
/// until it expires, so it is a [`Secret`].
#[derive(Clone)]
pub struct Presigned {
    /// What it allows.
    pub method: Method,
    /// The URL.
    pub url: Secret,
    /// Headers a client must send with it, `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// Unix time (seconds) after which it stops working.
    pub expires_at: i64,
}

credhost_plugin_api::debug_fields!(Presigned { method, url, headers, expires_at });

/// Delete an object.
#[derive(Clone, Debug)]
pub struct DeleteRequest {
    /// The bucket.
    pub bucket: String,
    /// The object name, validated by the host.
    pub name: String,
    /// Options this kit does not know by name.
    pub extra: HashMap<String, String>,
}

/// Ask for a build-job grant (interface 1.2): read one project object,
/// push one repository and pull a few, for `ttl`. Answer with nothing wider
/// than asked: what the platform cannot narrow is refused
/// ([`Error::unsupported`](crate::Error::unsupported) or a config error
/// naming the missing setting), unless `allow_unscoped_registry` accepts a
/// registry-wide credential, which the grant then says in its parts.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    /// The bucket of the project object (the projects bucket when empty:
    /// fill it in).
    pub bucket: String,
    /// The project object, validated by the host.
    pub name: String,
    /// The repository the job may push to and pull from.
    pub repository: Option<String>,
    /// Repositories the job may pull from.
    pub pull: Vec<String>,
    /// How long the grant works (the host checks 15 min to 12 h).
    pub ttl: Duration,
    /// Also hand storage credentials limited to reading the object.
    pub with_keys: bool,
    /// Accept a registry credential wider than the repositories asked for.
    pub allow_unscoped_registry: bool,
    /// Who the grant is for (a job or project name): use it as the session
    /// name where the platform records one. `[A-Za-z0-9_=,.@-]`, at most 64
    /// characters.
    pub session_name: String,
    /// Options this kit does not know by name.
    pub extra: HashMap<String, String>,
}

impl GrantRequest {
    /// The registry token scope the request stands for (push and pull on
    /// the repository, pull on each pulled one), space-separated as token
    /// servers take it; `None` when no repository was asked for.
    pub fn registry_scope(&self) -> Option<String> {
        let mut scopes: Vec<String> = Vec::new();
        if let Some(r) = &self.repository {
            scopes.push(format!("repository:{r}:pull,push"));
        }
        for p in &self.pull {
            if self.repository.as_deref() != Some(p.as_str()) {
                scopes.push(format!("repository:{p}:pull"));
            }
        }
        (!scopes.is_empty()).then(|| scopes.join(" "))
    }

    /// Whether any repository was asked for.
    pub fn wants_registry(&self) -> bool {
        self.repository.is_some() || !self.pull.is_empty()
    }

    /// Unix time (seconds) at which a grant made now for `ttl` ends.
    pub fn ends_at(&self) -> i64 {
        expires_in(self.ttl)
    }
}

/// What one part of a grant is limited to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantPart {
    /// `project`, `registry` or `keys`.
    pub part: String,
    /// `object`, `repository`, `registry` (wider than asked, accepted),
    /// `none` (absent), or a platform word.
    pub scope: String,
    /// What it allows, for people: one line, no secrets.
    pub detail: String,
    /// Unix time (seconds) after which it stops working, when known.
    pub expires_at: Option<i64>,
}

impl GrantPart {
    /// A part of `part` limited to `scope`.
    pub fn new(part: &str, scope: &str, detail: impl Into<String>, expires_at: Option<i64>) -> Self {
        Self { part: part.into(), scope: scope.into(), detail: detail.into(), expires_at }
    }
}

/// A build-job grant. The host turns it into the job's entries
/// (`PROJECT_URL`, `REGISTRY`, `REGISTRY_REPOSITORY`, `REGISTRY_TOKEN`,
/// `DOCKER_CONFIG_JSON`, `CREDHOST_GRANT_EXPIRES_AT`, ...).
#[derive(Clone, Default)]
pub struct Grant {
    /// A presigned GET of the project object, expiring with the grant;
    /// `None` for stores without URLs.
    pub project_url: Option<Secret>,
    /// The registry credential, narrowed to the requested repositories.
    pub registry: Option<RegistryAuth>,
    /// Further entries (storage keys, region, a shared path).
    pub entries: Vec<Entry>,
    /// What each part is limited to.
    pub parts: Vec<GrantPart>,
    /// Unix time (seconds) after which the grant stops working (the host
    /// takes the earliest of this and the parts' expiries).
    pub expires_at: i64,
}

credhost_plugin_api::debug_fields!(Grant { project_url, registry, entries, parts, expires_at });

/// A workload's registry request (interface 1.3), see
/// [`Provider::workload_registry_auth`](crate::Provider::workload_registry_auth).
#[derive(Clone)]
pub struct WorkloadRequest {
    /// The registry, as for a node's request.
    pub registry: RegistryRequest,
    /// The pod's service-account token (a JWT): hand it to the platform's
    /// exchange, never log it, never answer with it.
    pub token: Secret,
    /// The namespace from the token's `sub` claim, unverified: for names
    /// (session names, logs), never for trust.
    pub namespace: String,
    /// The service account's name from the token's `sub` claim, unverified.
    pub service_account: String,
    /// The service account's annotations the kubelet passed, e.g.
    /// [`api::annotations::ROLE_ARN`](crate::api::annotations::ROLE_ARN).
    pub annotations: HashMap<String, String>,
    /// Options this kit does not know by name.
    pub extra: HashMap<String, String>,
}

credhost_plugin_api::debug_fields!(WorkloadRequest { registry, token, namespace, service_account, annotations });

impl WorkloadRequest {
    /// The annotation `key`, trimmed, when set and not empty.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// `NAMESPACE.SERVICEACCOUNT`, cut to `max` characters: a session name
    /// that says whose pulls these are.
    pub fn session_name(&self, max: usize) -> String {
        let mut name = format!("{}.{}", self.namespace, self.service_account);
        name.truncate(name.char_indices().nth(max).map_or(name.len(), |(i, _)| i));
        name
    }
}
