//! Plugins distributed through OCI registries: `credhost plugins push` and
//! `install`.
//!
//! An artifact is an OCI 1.1 image manifest whose `artifactType` is
//! [`ARTIFACT_TYPE`], with the empty config and one layer per plugin file
//! (the file's bytes as they are, so a layer's digest is the file's sha256,
//! the `sha256` pin of an instance). Each layer is annotated with the file
//! name (`org.opencontainers.image.title`), its platform and the plugin's
//! name, version and interface version, read from the file by the vetting
//! `plugins inspect` does. Files of several platforms make an image index
//! of one such manifest per platform.
//!
//! Installing pins what is fetched (the manifest digest: a tag is resolved
//! once, and everything after is fetched by digest and checked) and what is
//! loaded (the file's sha256). A layer is streamed into a temporary file in
//! the plugin directory, counted against a size cap and hashed on the way,
//! vetted, and only then renamed into place: an interrupted, oversize,
//! tampered or unloadable download leaves nothing there.
//!
//! The registry client is the `oci-client` crate (the OCI distribution
//! client of the ORAS project): it speaks the distribution API, including
//! the Bearer token exchange of token-auth registries and Basic auth of
//! htpasswd registries, ECR and Artifact Registry.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use futures::StreamExt;
use oci_client::{
    client::{ClientConfig, ClientProtocol},
    manifest::{OciDescriptor, OciImageIndex, OciImageManifest},
    secrets::RegistryAuth as OciAuth,
    Client, Reference, RegistryOperation,
};
use sha2::Digest as _;

use crate::{loader, Error, ErrorKind, PluginInfo, Result};

/// The `artifactType` of a credhost plugin artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.credhost.plugin.v1";
/// The media type of a layer holding one plugin file, as it is.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.credhost.plugin.layer.v1";
/// The OCI empty descriptor's media type (the config of an artifact).
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's content, `{}`.
const EMPTY_CONFIG: &[u8] = b"{}";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Layer annotations.
pub mod annotations {
    /// The file name the plugin was pushed from.
    pub const TITLE: &str = "org.opencontainers.image.title";
    /// `OS/ARCH` of the file (`linux/amd64`).
    pub const PLATFORM: &str = "io.credhost.plugin.platform";
    /// The plugin's name.
    pub const NAME: &str = "io.credhost.plugin.name";
    /// The plugin's own version.
    pub const VERSION: &str = "io.credhost.plugin.version";
    /// The plugin interface version it was built against.
    pub const API_VERSION: &str = "io.credhost.plugin.api-version";
}

/// The default of `plugin_download_max_mib`.
pub const DEFAULT_MAX_DOWNLOAD_MIB: u64 = 512;
/// The largest manifest or index read (they are a few KiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// An operating system and architecture, as OCI names them (`linux/amd64`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `darwin`, `windows`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub arch: String,
}

impl Platform {
    /// This machine's.
    pub fn current() -> Self {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        Self { os: os.into(), arch: oci_arch(std::env::consts::ARCH).into() }
    }

    /// Parses `OS/ARCH`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.split_once('/') {
            Some((os, arch))
                if !os.is_empty()
                    && !arch.is_empty()
                    && [os, arch].iter().all(|s| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) =>
            {
                Ok(Self { os: os.to_ascii_lowercase(), arch: arch.to_ascii_lowercase() })
            }
            _ => Err(Error::InvalidInput(format!(
                "`{}` is not a platform: use OS/ARCH, e.g. linux/amd64",
                text.escape_debug()
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// The OCI name of a Rust architecture name.
fn oci_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Registry credentials for pushing and installing.
#[derive(Clone, Default)]
pub enum RegistryCredentials {
    /// None: anonymous access.
    #[default]
    Anonymous,
    /// A user name and password (or token), as docker logs in with.
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: crate::Secret,
    },
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

impl RegistryCredentials {
    fn to_oci(&self) -> OciAuth {
        match self {
            Self::Anonymous => OciAuth::Anonymous,
            Self::Basic { username, password } => OciAuth::Basic(username.clone(), password.expose().to_owned()),
        }
    }

    /// `anonymous` or `user NAME`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Anonymous => "anonymously".into(),
            Self::Basic { username, .. } => format!("as {username}"),
        }
    }
}

/// A parsed `REGISTRY/REPO(:TAG|@sha256:DIGEST)`.
#[derive(Clone, Debug)]
pub struct ArtifactRef {
    inner: Reference,
}

impl ArtifactRef {
    /// Parses a reference; the registry must be named (no Docker Hub
    /// shorthand such as `busybox`).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "`{}` is not a plugin reference ({why}): use REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST",
                crate::one_line(text)
            ))
        };
        let first = text.split('/').next().unwrap_or_default();
        if !text.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost") {
            return Err(bad("no registry host"));
        }
        let inner = Reference::try_from(text).map_err(|e| bad(&e.to_string()))?;
        Ok(Self { inner })
    }

    /// The registry host (`host[:port]`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// `sha256:...`, when the reference names a digest.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `REGISTRY/REPOSITORY`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> Self {
        Self { inner: Reference::with_digest(self.registry().into(), self.repository().into(), digest.into()) }
    }
}

impl std::fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.inner.whole())
    }
}

/// Whether `registry` (`host[:port]`) is on this machine, where plain HTTP
/// is used (as docker allows for 127.0.0.0/8).
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn client_for(registry: &str) -> Result<Client> {
    let protocol = if is_loopback(registry) {
        ClientProtocol::HttpsExcept(vec![registry.to_owned()])
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        user_agent: concat!("credhost/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    Client::try_from(config).map_err(|e| Error::Internal(format!("cannot build the registry client: {e}")))
}

/// A registry error as one line, naming the registry and what was asked.
fn registry_error(what: &str, reference: &ArtifactRef, e: oci_client::errors::OciDistributionError) -> Error {
    use oci_client::errors::OciDistributionError as E;
    let message = format!("{what} {reference}: {}", transport_text(&e));
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => registry(ErrorKind::Unauthenticated, message),
        E::ImageManifestNotFoundError(_) => registry(ErrorKind::NotFound, message),
        E::RequestError(_) => registry(ErrorKind::Unavailable, message),
        E::DigestError(_) => registry(
            ErrorKind::PluginRefused,
            format!("{what} {reference}: the registry sent content that does not match its digest (digest mismatch); nothing was written: {}", transport_text(&e)),
        ),
        E::ServerError { code: 401 | 403, .. } => registry(ErrorKind::Unauthenticated, message),
        E::ServerError { code: 404, .. } => registry(ErrorKind::NotFound, message),
        E::ServerError { code, .. } if code >= 500 => registry(ErrorKind::Unavailable, message),
        _ => registry(ErrorKind::Other, message),
    }
}

/// A registry client's error as one line, with the query of every URL in
/// it left out: a registry may redirect a blob to a presigned URL (ECR's
/// S3, GCS) whose query is a credential.
fn transport_text(e: &dyn std::fmt::Display) -> String {
    let text = crate::one_line(&e.to_string());
    let mut out = String::with_capacity(text.len());
    let mut in_url = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() || c == '(' {
            in_url = false;
        }
        if c == ':' && chars.peek() == Some(&'/') {
            in_url = true;
        }
        if in_url && c == '?' {
            out.push_str("?<redacted>");
            while chars.peek().is_some_and(|n| !n.is_whitespace() && !matches!(n, ')' | ',')) {
                chars.next();
            }
            in_url = false;
            continue;
        }
        out.push(c);
    }
    out
}

/// An [`Error::Registry`].
fn registry(kind: ErrorKind, message: String) -> Error {
    Error::Registry { kind, message }
}

/// `sha256:HEX` of `bytes`.
fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// One plugin file to push, vetted.
#[derive(Clone, Debug)]
pub struct PushFile {
    /// The file.
    pub path: PathBuf,
    /// Its platform.
    pub platform: Platform,
    /// What it says about itself.
    pub info: PluginInfo,
    /// Its sha256 (hex).
    pub sha256: String,
}

/// Vets `path` as `plugins inspect` does (loading it) and reads its name,
/// version and interface version; `platform` is this machine's (a file is
/// read by loading it, so only files for this machine can be pushed from it).
pub fn vet_for_push(path: &Path, platform: Option<Platform>, policy: loader::Policy) -> Result<PushFile> {
    let here = Platform::current();
    if let Some(p) = &platform {
        if *p != here {
            return Err(Error::InvalidInput(format!(
                "{}: --platform {p}, but this machine is {here}: a plugin file is vetted by loading it, so push it from a {p} machine",
                path.display()
            )));
        }
    }
    let inspection = loader::inspect(path, policy);
    if let Some(e) = inspection.refused {
        return Err(Error::Load { plugin: path.display().to_string(), source: e });
    }
    let (Some(info), Some(sha256)) = (inspection.info, inspection.sha256) else {
        return Err(Error::InvalidInput(format!("{}: not a plugin this host can load", path.display())));
    };
    Ok(PushFile { path: path.to_path_buf(), platform: here, info, sha256 })
}

/// What a push stored.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The digest of what the tag names: the manifest, or the index.
    pub digest: String,
    /// `REGISTRY/REPOSITORY@DIGEST`.
    pub pinned: String,
    /// Each platform's manifest digest.
    pub manifests: Vec<(Platform, String)>,
}

/// Pushes `files` as one artifact to `reference` (which names a tag).
pub async fn push(files: &[PushFile], reference: &ArtifactRef, auth: &RegistryCredentials) -> Result<Pushed> {
    if files.is_empty() {
        return Err(Error::InvalidInput("no plugin files to push".into()));
    }
    if reference.digest().is_some() {
        return Err(Error::InvalidInput(format!("{reference}: push to a tag (REGISTRY/REPOSITORY:TAG), not a digest")));
    }
    let client = client_for(reference.registry())?;
    client
        .auth(&reference.inner, &auth.to_oci(), RegistryOperation::Push)
        .await
        .map_err(|e| registry_error("cannot log in to push", reference, e))?;
    let mut by_platform: BTreeMap<Platform, Vec<&PushFile>> = BTreeMap::new();
    for f in files {
        by_platform.entry(f.platform.clone()).or_default().push(f);
    }
    client
        .push_blob(&reference.inner, EMPTY_CONFIG.to_vec(), &digest_of(EMPTY_CONFIG))
        .await
        .map_err(|e| registry_error("cannot push the config of", reference, e))?;
    let mut manifests = Vec::new();
    for (platform, files) in &by_platform {
        let mut layers = Vec::new();
        for f in files {
            let bytes = tokio::fs::read(&f.path)
                .await
                .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", f.path.display())))?;
            let digest = digest_of(&bytes);
            if digest != format!("sha256:{}", f.sha256) {
                return Err(Error::InvalidInput(format!("{} changed after it was vetted", f.path.display())));
            }
            let size = bytes.len() as i64;
            client
                .push_blob(&reference.inner, bytes, &digest)
                .await
                .map_err(|e| registry_error(&format!("cannot push {} to", f.path.display()), reference, e))?;
            let title = f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let annotations = BTreeMap::from([
                (annotations::TITLE.to_owned(), title),
                (annotations::PLATFORM.to_owned(), platform.to_string()),
                (annotations::NAME.to_owned(), f.info.name.clone()),
                (annotations::VERSION.to_owned(), f.info.version.clone()),
                (annotations::API_VERSION.to_owned(), f.info.api_version.clone()),
            ]);
            layers.push(OciDescriptor {
                media_type: LAYER_MEDIA_TYPE.into(),
                digest,
                size,
                urls: None,
                annotations: Some(annotations),
                ..Default::default()
            });
        }
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            config: OciDescriptor {
                media_type: EMPTY_MEDIA_TYPE.into(),
                digest: digest_of(EMPTY_CONFIG),
                size: EMPTY_CONFIG.len() as i64,
                urls: None,
                annotations: None,
                ..Default::default()
            },
            layers,
            subject: None,
            artifact_type: Some(ARTIFACT_TYPE.into()),
            annotations: None,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(format!("manifest: {e}")))?;
        let digest = digest_of(&bytes);
        // One platform: the tag names the manifest; several: each manifest
        // goes up by digest, and the tag names the index.
        let target = if by_platform.len() == 1 { reference.clone() } else { reference.at_digest(&digest) };
        let size = bytes.len() as i64;
        client
            .push_manifest_raw(&target.inner, bytes, http_header(MANIFEST_MEDIA_TYPE))
            .await
            .map_err(|e| registry_error("cannot push the manifest of", reference, e))?;
        manifests.push((platform.clone(), digest, size));
    }
    let digest = if let [(_, digest, _)] = manifests.as_slice() {
        digest.clone()
    } else {
        let entries: Vec<serde_json::Value> = manifests
            .iter()
            .map(|(p, digest, size)| {
                serde_json::json!({
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    "digest": digest,
                    "size": size,
                    "artifactType": ARTIFACT_TYPE,
                    "platform": { "os": p.os, "architecture": p.arch },
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "manifests": entries,
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| Error::Internal(format!("index: {e}")))?;
        let digest = digest_of(&bytes);
        client
            .push_manifest_raw(&reference.inner, bytes, http_header(INDEX_MEDIA_TYPE))
            .await
            .map_err(|e| registry_error("cannot push the index of", reference, e))?;
        digest
    };
    Ok(Pushed {
        pinned: format!("{}@{digest}", reference.name()),
        digest,
        manifests: manifests.into_iter().map(|(p, d, _)| (p, d)).collect(),
    })
}

fn http_header(value: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(value)
}

/// How to install.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The plugin directory the file goes into.
    pub dir: PathBuf,
    /// Which plugin of the artifact, when it holds several for this
    /// platform; `None`: the only one.
    pub plugin: Option<String>,
    /// The largest layer accepted, in bytes.
    pub max_bytes: u64,
    /// How the installed file is vetted.
    pub policy: loader::Policy,
    /// The `sha256` pin (hex) the file must have: checked against the
    /// layer's digest before anything is downloaded.
    pub expect_sha256: Option<String>,
}

/// A plugin file fetched and checked against its digests, not yet in
/// place: vet it ([`Fetched::path`]), then [`Fetched::place`] it. Dropped,
/// it is removed.
#[derive(Debug)]
pub struct Fetched {
    part: tempfile::NamedTempFile,
    /// `REGISTRY/REPOSITORY@sha256:...`: what the reference resolved to.
    pub pinned: String,
    /// The digest the reference resolved to (a manifest or an index).
    pub digest: String,
    /// The plugin's name, as the artifact says.
    pub name: String,
    /// Its version, as the artifact says.
    pub version: String,
    /// The file's sha256 (hex): the instance's `sha256` pin.
    pub sha256: String,
    /// Where [`Fetched::place`] puts it.
    pub dest: PathBuf,
}

/// What an install wrote.
#[derive(Clone, Debug)]
pub struct Installed {
    /// `REGISTRY/REPOSITORY@sha256:...`: what the reference resolved to.
    pub pinned: String,
    /// The digest the reference resolved to.
    pub digest: String,
    /// The file written.
    pub file: PathBuf,
    /// Its sha256 (hex): the instance's `sha256` pin.
    pub sha256: String,
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
}

impl Fetched {
    /// The fetched file, for vetting.
    pub fn path(&self) -> &Path {
        self.part.path()
    }

    /// Moves the file into place, after vetting found a plugin calling
    /// itself `vetted_name` (which must be the name the artifact gave).
    pub fn place(self, vetted_name: &str) -> Result<Installed> {
        if vetted_name != self.name {
            return Err(registry(
                ErrorKind::PluginRefused,
                format!(
                    "the fetched plugin calls itself `{vetted_name}`, but the artifact says `{}`; nothing was written",
                    self.name
                ),
            ));
        }
        let Self { part, pinned, digest, name, version, sha256, dest } = self;
        part.persist(&dest).map_err(|e| {
            Error::InvalidInput(format!("cannot move the plugin into place at {}: {}", dest.display(), e.error))
        })?;
        Ok(Installed { pinned, digest, file: dest, sha256, name, version })
    }
}

/// Fetches `reference`'s plugin for this machine, vets it by loading it
/// in this process (as `plugins inspect` does), and moves it into
/// `opts.dir`: see the module documentation.
pub async fn install(reference: &ArtifactRef, auth: &RegistryCredentials, opts: &InstallOptions) -> Result<Installed> {
    let fetched = fetch(reference, auth, opts).await?;
    let policy = opts.policy;
    tokio::task::spawn_blocking(move || {
        let inspection = loader::inspect(fetched.path(), policy);
        if let Some(e) = inspection.refused {
            return Err(Error::Load { plugin: fetched.name.clone(), source: e });
        }
        let name = inspection.info.map(|i| i.name).unwrap_or_default();
        fetched.place(&name)
    })
    .await
    .map_err(|e| Error::Internal(format!("the vetting task failed: {e}")))?
}

/// Fetches `reference`'s plugin for this machine into a temporary file in
/// `opts.dir`, checked against every digest and the size cap.
pub async fn fetch(reference: &ArtifactRef, auth: &RegistryCredentials, opts: &InstallOptions) -> Result<Fetched> {
    let client = client_for(reference.registry())?;
    let oci_auth = auth.to_oci();
    client
        .auth(&reference.inner, &oci_auth, RegistryOperation::Pull)
        .await
        .map_err(|e| registry_error("cannot log in to fetch", reference, e))?;
    let digest = match reference.digest() {
        Some(d) => d.to_owned(),
        None => client
            .fetch_manifest_digest(&reference.inner, &oci_auth)
            .await
            .map_err(|e| registry_error("cannot resolve", reference, e))?,
    };
    let pinned = reference.at_digest(&digest);
    let here = Platform::current();
    let manifest: Box<OciImageManifest> = match fetch_manifest(&client, &pinned, &oci_auth).await? {
        Manifest::Image(m) => m,
        Manifest::Index(index) => {
            let platforms: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            let entry = index
                .manifests
                .iter()
                .find(|e| {
                    e.platform.as_ref().is_some_and(|p| format!("{}/{}", p.os, p.architecture) == here.to_string())
                })
                .ok_or_else(|| no_platform(reference, &here, &platforms))?;
            match fetch_manifest(&client, &reference.at_digest(&entry.digest), &oci_auth).await? {
                Manifest::Image(m) => m,
                Manifest::Index(_) => {
                    return Err(registry(
                        ErrorKind::InvalidInput,
                        format!("{reference}: an index inside an index is not a plugin artifact"),
                    ))
                }
            }
        }
    };
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(Error::InvalidInput(format!(
            "{reference} is not a credhost plugin artifact (artifactType {}, not {ARTIFACT_TYPE})",
            manifest.artifact_type.as_deref().unwrap_or("missing")
        )));
    }
    let annotation =
        |l: &OciDescriptor, key: &str| l.annotations.as_ref().and_then(|a| a.get(key)).cloned().unwrap_or_default();
    let ours: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == LAYER_MEDIA_TYPE && annotation(l, annotations::PLATFORM) == here.to_string())
        .collect();
    if ours.is_empty() {
        let mut platforms: Vec<String> = manifest.layers.iter().map(|l| annotation(l, annotations::PLATFORM)).collect();
        platforms.sort();
        platforms.dedup();
        return Err(no_platform(reference, &here, &platforms));
    }
    let names: Vec<String> = ours.iter().map(|l| annotation(l, annotations::NAME)).collect();
    let layer = match &opts.plugin {
        Some(want) => ours.iter().find(|l| annotation(l, annotations::NAME) == *want).copied().ok_or_else(|| {
            registry(
                ErrorKind::NotFound,
                format!("{reference} holds no plugin `{want}` for {here}; it holds: {}", names.join(", ")),
            )
        })?,
        None if ours.len() == 1 => ours[0],
        None => {
            return Err(Error::InvalidInput(format!(
                "{reference} holds {} plugins for {here} ({}): say which with --plugin NAME",
                ours.len(),
                names.join(", ")
            )))
        }
    };
    let name = annotation(layer, annotations::NAME);
    if !crate::config::valid_plugin_name(&name) {
        return Err(registry(
            ErrorKind::PluginRefused,
            format!("{reference}: the layer names an invalid plugin `{}`", name.escape_debug()),
        ));
    }
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > opts.max_bytes {
        return Err(registry(
            ErrorKind::PluginRefused,
            format!(
                "{reference}: the plugin `{name}` is {size} bytes, over the limit of {} MiB (plugin_download_max_mib); nothing was written",
                opts.max_bytes >> 20
            ),
        ));
    }
    let sha256 = layer
        .digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            registry(
                ErrorKind::PluginRefused,
                format!("{reference}: layer digest {} is not sha256", crate::one_line(&layer.digest)),
            )
        })?
        .to_ascii_lowercase();
    if let Some(pin) = opts.expect_sha256.as_deref().filter(|pin| !pin.eq_ignore_ascii_case(&sha256)) {
        return Err(registry(
            ErrorKind::PluginRefused,
            format!(
                "{reference}: the plugin `{name}` there has sha256 {sha256}, but the configuration pins {pin}; not fetched, never loaded (install it by hand and update the pin to take the new file)"
            ),
        ));
    }
    let dest = opts.dir.join(loader::library_file_name(&loader::default_library(&name)));
    let part = download_layer(&client, reference, layer, size, &opts.dir).await?;
    Ok(Fetched {
        part,
        pinned: pinned.to_string(),
        digest,
        version: annotation(layer, annotations::VERSION),
        name,
        sha256,
        dest,
    })
}

fn no_platform(reference: &ArtifactRef, here: &Platform, platforms: &[String]) -> Error {
    registry(
        ErrorKind::NotFound,
        format!(
            "{reference} has no plugin for {here}; it has: {}",
            if platforms.is_empty() { "none".to_owned() } else { platforms.join(", ") }
        ),
    )
}

enum Manifest {
    Image(Box<OciImageManifest>),
    Index(OciImageIndex),
}

/// The manifest or index at `reference` (which names a digest), checked
/// against that digest.
async fn fetch_manifest(client: &Client, reference: &ArtifactRef, auth: &OciAuth) -> Result<Manifest> {
    let (bytes, digest) = client
        .pull_manifest_raw(&reference.inner, auth, &[MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE])
        .await
        .map_err(|e| registry_error("cannot fetch", reference, e))?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(registry(
            ErrorKind::Other,
            format!("{reference}: the manifest is over {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    let actual = digest_of(&bytes);
    if Some(actual.as_str()) != reference.digest() || digest != actual {
        return Err(registry(
            ErrorKind::PluginRefused,
            format!(
            "{reference}: the registry sent a manifest whose digest is {actual} (digest mismatch); nothing was written"
        ),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let kind: Kind = serde_json::from_slice(&bytes)
        .map_err(|e| registry(ErrorKind::Other, format!("{reference}: the manifest is not JSON: {e}")))?;
    let parse_err = |e: serde_json::Error| registry(ErrorKind::Other, format!("{reference}: unreadable manifest: {e}"));
    if kind.media_type.as_deref() == Some(INDEX_MEDIA_TYPE) || kind.manifests.is_some() {
        Ok(Manifest::Index(serde_json::from_slice(&bytes).map_err(parse_err)?))
    } else {
        Ok(Manifest::Image(Box::new(serde_json::from_slice(&bytes).map_err(parse_err)?)))
    }
}

/// Streams `layer` into a temporary file in `dir`, counting its bytes
/// against `size` and hashing them: the temporary file, whole and checked,
/// or an error (the file removed).
async fn download_layer(
    client: &Client,
    reference: &ArtifactRef,
    layer: &OciDescriptor,
    size: u64,
    dir: &Path,
) -> Result<tempfile::NamedTempFile> {
    let part = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::InvalidInput(format!("cannot create the plugin directory {}: {e}", dir.display()))
            })?;
            remove_stale_parts(&dir);
            let mut b = tempfile::Builder::new();
            b.prefix(".credhost-install-").suffix(".part");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                b.permissions(std::fs::Permissions::from_mode(0o755));
            }
            b.tempfile_in(&dir).map_err(|e| {
                Error::InvalidInput(format!("cannot write into the plugin directory {}: {e}", dir.display()))
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("{e}")))??
    };
    let mut stream = client
        .pull_blob_stream(&reference.inner, layer)
        .await
        .map_err(|e| registry_error("cannot fetch the plugin of", reference, e))?;
    if stream.content_length.is_some_and(|n| n != size) {
        return Err(registry(
            ErrorKind::PluginRefused,
            format!(
                "{reference}: the registry sends {} bytes for a layer of {size}; nothing was written",
                stream.content_length.unwrap_or_default()
            ),
        ));
    }
    let mut file = tokio::fs::File::from_std(part.reopen().map_err(|e| Error::Internal(format!("{e}")))?);
    let mut hasher = sha2::Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = stream.stream.next().await {
        let chunk = chunk.map_err(|e| {
            let why = transport_text(&e);
            // The client checks the layer's digest as the stream ends.
            if e.get_ref().is_some_and(|inner| inner.is::<oci_client::errors::DigestError>()) {
                let digest = &layer.digest;
                registry(
                    ErrorKind::PluginRefused,
                    format!("{reference}: the plugin layer's bytes do not match its digest {digest} ({why}); nothing was written"),
                )
            } else {
                registry(
                    ErrorKind::Unavailable,
                    format!("{reference}: the download of the plugin broke off: {why}; nothing was written"),
                )
            }
        })?;
        got += chunk.len() as u64;
        if got > size {
            return Err(registry(
                ErrorKind::PluginRefused,
                format!("{reference}: the registry sent more than the layer's {size} bytes; nothing was written"),
            ));
        }
        hasher.update(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(|e| Error::InvalidInput(format!("cannot write the plugin file: {e}")))?;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if got != size || actual != layer.digest {
        return Err(registry(ErrorKind::PluginRefused, format!(
            "{reference}: the plugin layer's bytes do not match its digest {} (got {got} bytes, {actual}); nothing was written",
            layer.digest
        )));
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(|e| Error::InvalidInput(format!("{e}")))?;
    file.sync_all().await.map_err(|e| Error::InvalidInput(format!("cannot write the plugin file: {e}")))?;
    Ok(part)
}

/// Removes the temporary files of installs into `dir` that were killed
/// outright (SIGKILL, power loss: nothing ran to remove them). A running
/// install writes its file at least once a minute (the read timeout), so
/// one untouched for an hour is nobody's.
fn remove_stale_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".credhost-install-") && name.ends_with(".part")) {
            continue;
        }
        let stale = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| t < hour_ago);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(target: "credhost::oci", file = %entry.path().display(), "removed the temporary file of an install that was killed");
        }
    }
}

/// The TOML lines pinning an installed plugin as instance `instance`.
pub fn pins_toml(instance: &str, installed: &Installed) -> String {
    let mut out = format!("[plugins.{instance}]\n");
    if instance != installed.name {
        out += &format!("plugin = \"{}\"\n", installed.name);
    }
    out += &format!("oci = \"{}\"\nsha256 = \"{}\"\n", installed.pinned, installed.sha256);
    out
}

/// Adds (or updates) `[plugins.INSTANCE]`'s `plugin`, `oci` and `sha256`
/// in the configuration file `path`, keeping the rest (comments included),
/// by writing a new file beside it and renaming it into place.
pub fn write_config(path: &Path, instance: &str, installed: &Installed) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(String::new()) } else { Err(e) })
        .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| Error::Config {
        location: path.display().to_string(),
        message: crate::one_line(&e.to_string()),
    })?;
    let plugins = doc.entry("plugins").or_insert_with(|| {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        toml_edit::Item::Table(t)
    });
    let Some(plugins) = plugins.as_table_mut() else {
        return Err(Error::Config { location: path.display().to_string(), message: "`plugins` is not a table".into() });
    };
    let table = plugins.entry(instance).or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
    let Some(table) = table.as_table_mut() else {
        return Err(Error::Config {
            location: path.display().to_string(),
            message: format!("`plugins.{instance}` is not a table"),
        });
    };
    if instance != installed.name || table.contains_key("plugin") {
        table["plugin"] = toml_edit::value(installed.name.clone());
    }
    table["oci"] = toml_edit::value(installed.pinned.clone());
    table["sha256"] = toml_edit::value(installed.sha256.clone());
    // The result must still be a valid configuration, which loads the
    // file just installed: when it would look elsewhere (`--dir` outside
    // its plugin_dir, another `file`), `file` names the installed one.
    let config = crate::config::Config::parse(path, &doc.to_string(), None, None)?;
    let loads = crate::Host::new(config).plugin_file(instance)?;
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if canonical(&loads) != canonical(&installed.file) {
        doc["plugins"][instance]["file"] = toml_edit::value(canonical(&installed.file).display().to_string());
    }
    let new = doc.to_string();
    crate::config::Config::parse(path, &new, None, None)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".plugins-toml-")
        .tempfile_in(&dir)
        .map_err(|e| Error::InvalidInput(format!("cannot write beside {}: {e}", path.display())))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    tmp.write_all(new.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::InvalidInput(format!("cannot write beside {}: {e}", path.display())))?;
    tmp.persist(path).map_err(|e| Error::InvalidInput(format!("cannot replace {}: {}", path.display(), e.error)))?;
    Ok(())
}

/// Registry credentials for `registry` (`host[:port]`), as `plugins push`,
/// `plugins install` and `auto_install` fetch with them: from the instance
/// of `config` that serves the registry (through the same cache as the
/// docker credential helper), else from the docker configuration chain
/// ([`docker_config_credentials`]), else none (anonymous).
///
/// No instance installs its own plugin while this runs: an instance whose
/// file is missing is passed over, never fetched (which could recurse).
pub async fn registry_credentials(
    config: Option<&crate::config::Config>,
    registry: &str,
) -> Result<RegistryCredentials> {
    if let Some(config) = config {
        let mut config = config.clone();
        for instance in config.instances.values_mut() {
            instance.auto_install = false;
        }
        match crate::Registries::new(config).get(registry).await {
            Ok(Some(auth)) => {
                tracing::debug!(target: "credhost::oci", registry, "credentials from the instance serving it");
                return Ok(RegistryCredentials::Basic { username: auth.username, password: auth.secret });
            }
            Ok(None) => {}
            // An instance whose plugin cannot be loaded (its file not yet
            // installed, say) might serve it: go on to the other sources.
            Err(e @ Error::Unresolved { .. }) => {
                tracing::debug!(target: "credhost::oci", registry, "no loadable instance serves it: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    let owned = registry.to_owned();
    let found = tokio::task::spawn_blocking(move || docker_config_credentials(&owned))
        .await
        .map_err(|e| Error::Internal(format!("reading the docker configuration failed: {e}")))??;
    if found.is_some() {
        tracing::debug!(target: "credhost::oci", registry, "credentials from the docker configuration");
    }
    Ok(found.unwrap_or_default())
}

/// Credentials for `registry` from the docker configuration chain:
/// `REGISTRY_AUTH_FILE`, then `$DOCKER_CONFIG/config.json`, then
/// `~/.docker/config.json`; the first file that exists is read, and its
/// `auths` entry for the registry (`auth`, or `username` and `password`)
/// used. Credential helpers and stores named there are not run.
pub fn docker_config_credentials(registry: &str) -> Result<Option<RegistryCredentials>> {
    let candidates = [
        std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from),
        std::env::var_os("DOCKER_CONFIG").map(|d| PathBuf::from(d).join("config.json")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    ];
    let Some(path) = candidates.into_iter().flatten().find(|p| p.is_file()) else { return Ok(None) };
    let bad = |why: String| Error::Config { location: path.display().to_string(), message: why };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else { return Ok(None) };
    let entry = auths.iter().find(|(k, _)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        k.split('/').next() == Some(registry)
    });
    let Some((_, entry)) = entry else { return Ok(None) };
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| bad(format!("auths.{registry}.auth is not base64 of USER:PASSWORD")))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad(format!("auths.{registry}.auth is not base64 of USER:PASSWORD")))?;
        return Ok(Some(RegistryCredentials::Basic { username: user.to_owned(), password: crate::Secret::new(pass) }));
    }
    match (entry.get("username").and_then(|u| u.as_str()), entry.get("password").and_then(|p| p.as_str())) {
        (Some(u), Some(p)) => {
            Ok(Some(RegistryCredentials::Basic { username: u.to_owned(), password: crate::Secret::new(p) }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_registry() {
        let r = ArtifactRef::parse("127.0.0.1:5000/team/plugins:v1").unwrap();
        assert_eq!((r.registry(), r.repository(), r.digest()), ("127.0.0.1:5000", "team/plugins", None));
        let d = format!("sha256:{}", "a".repeat(64));
        let pinned = r.at_digest(&d);
        assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/team/plugins@{d}"));
        assert_eq!(ArtifactRef::parse(&pinned.to_string()).unwrap().digest(), Some(d.as_str()));
        for bad in ["busybox", "busybox:v1", "team/plugins:v1", "", "registry.example/UPPER:v1"] {
            let e = ArtifactRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not a plugin reference") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn only_stale_temporary_files_of_installs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for name in [".credhost-install-a.part", ".credhost-install-b.part", "libcredhost_x.so", "notes.part"] {
            let f = std::fs::File::create(dir.path().join(name)).unwrap();
            if name != ".credhost-install-b.part" {
                f.set_modified(old).unwrap();
            }
        }
        remove_stale_parts(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".credhost-install-b.part", "libcredhost_x.so", "notes.part"]);
    }

    #[test]
    fn transport_errors_lose_the_queries_of_their_urls() {
        let text = transport_text(&"error sending request for url (https://bucket.s3.amazonaws.com/blob?X-Amz-Signature=abc&X-Amz-Credential=AKIA), code: 500 ok?");
        assert_eq!(
            text,
            "error sending request for url (https://bucket.s3.amazonaws.com/blob?<redacted>), code: 500 ok?"
        );
        assert!(!transport_text(&"url http://h/v2/x/blobs/uploads/?_state=s3cret next").contains("s3cret"));
    }

    #[test]
    fn only_loopback_registries_are_spoken_to_in_plain_http() {
        for host in ["localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example", "10.0.0.1:5000", "localhost.example:5000", "[2001:db8::1]:5000"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn platforms_parse_as_oci_names_them() {
        assert_eq!(Platform::parse("linux/amd64").unwrap().to_string(), "linux/amd64");
        assert_eq!(Platform::parse("Linux/ARM64").unwrap().to_string(), "linux/arm64");
        for bad in ["linux", "/amd64", "linux/", "linux/amd64/v8", "li nux/amd64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let here = Platform::current();
        assert!(!here.os.is_empty() && !here.arch.contains('_'), "{here}");
    }

    fn installed(name: &str) -> Installed {
        Installed {
            pinned: format!("127.0.0.1:5000/plugins@sha256:{}", "b".repeat(64)),
            digest: format!("sha256:{}", "b".repeat(64)),
            file: PathBuf::from("libcredhost_local.so"),
            sha256: "c".repeat(64),
            name: name.into(),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn write_config_adds_the_pins_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugins.toml");
        let original = "# our platform\nplatform = \"local\" # chosen by ops\n\n[plugins.local]\nisolation = \"process\"\n\n[plugins.local.settings]\nstorage = { kind = \"fs\", root = \"store\", bucket = \"projects\" }\n";
        std::fs::write(&path, original).unwrap();
        write_config(&path, "local", &installed("local")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# our platform\nplatform = \"local\" # chosen by ops\n"), "{text}");
        assert!(text.contains("isolation = \"process\""), "{text}");
        assert!(text.contains(&format!("sha256 = \"{}\"", "c".repeat(64))), "{text}");
        assert!(text.contains("oci = \"127.0.0.1:5000/plugins@sha256:"), "{text}");
        // Again, as another instance of the same plugin.
        write_config(&path, "other", &installed("local")).unwrap();
        let config = crate::config::Config::parse(&path, &std::fs::read_to_string(&path).unwrap(), None, None).unwrap();
        assert_eq!(config.instances["other"].plugin, "local");
        assert!(config.instances["other"].oci.is_some());
        // The installed file is elsewhere than plugin_dir: `file` names it.
        assert!(config.instances["other"].file.as_deref().is_some_and(|f| f.ends_with("libcredhost_local.so")));
        // Nothing beside it is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_config_refuses_what_would_not_be_a_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugins.toml");
        std::fs::write(&path, "plugins = 3\n").unwrap();
        assert!(write_config(&path, "local", &installed("local")).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "plugins = 3\n");
    }

    #[test]
    fn docker_config_auths_are_read_by_registry_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        std::fs::write(
            &path,
            format!(r#"{{"auths": {{"https://registry.example/v1/": {{"auth": "{auth}"}}, "other.example": {{"username": "u", "password": "p"}}}}}}"#),
        )
        .unwrap();
        std::env::set_var("REGISTRY_AUTH_FILE", &path);
        let found = docker_config_credentials("registry.example").unwrap();
        let Some(RegistryCredentials::Basic { username, password }) = &found else { panic!("{found:?}") };
        assert_eq!((username.as_str(), password.expose()), ("ci", "s3cret"));
        assert!(!format!("{found:?}").contains("s3cret"));
        assert!(matches!(docker_config_credentials("other.example").unwrap(), Some(RegistryCredentials::Basic { .. })));
        assert!(docker_config_credentials("nowhere.example").unwrap().is_none());
        std::env::remove_var("REGISTRY_AUTH_FILE");
    }
}
