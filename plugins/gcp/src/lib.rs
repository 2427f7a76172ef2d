//! The `gcp` credhost plugin: Artifact Registry / Container Registry tokens
//! and project storage in a GCS bucket, with service-account, Application
//! Default and metadata-server credentials. This file is the provider and
//! its export glue; the work is in the modules.
//!
//! GCS is spoken through its JSON API over the workspace's `reqwest`, and
//! tokens are made here (`key`, `token`), rather than through the official
//! google-cloud-rust crates, object_store's gcp backend or gcp_auth:
//! - resumable uploads must resume from the offset the *server* reports
//!   after a failure, with bounded memory; object_store sends GCS uploads
//!   through the XML multipart API (which the emulator lacks), and none of
//!   them expose that recovery;
//! - the endpoint override has to reach every request (including the session
//!   URIs of resumable uploads), and token refresh timing and the credential
//!   order have to be ours to control and test;
//! - the alternatives add large dependency trees (gRPC, their own HTTP
//!   stacks) to a plugin that needs a dozen requests.
//!
//! RS256 signing uses `ring`, already compiled for rustls, so it costs no
//! build time; the `rsa` crate would add a second, slower implementation,
//! and `jsonwebtoken` would bring a crypto backend of its own.
#![warn(missing_docs)]

pub mod checksum;
pub mod credentials;
pub mod download;
pub mod error;
pub mod gcs;
pub mod key;
pub mod registry;
pub mod settings;
pub mod token;
pub mod upload;

use std::{fmt, sync::Arc, time::Duration};

use credhost_plugin_api::{
    sdk::{self, Context, CredentialProvider, Download, Plugin, Upload},
    CheckItem, CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, PluginError, RegistryAuth,
    RegistryRequest, TransferResult,
};

use crate::{
    error::send_error,
    gcs::Gcs,
    settings::Settings,
    token::TokenSource,
};

/// The provider.
pub struct GcpProvider {
    project_id: String,
    location: String,
    registry: String,
    bucket: String,
    gcs: Arc<Gcs>,
    chunk: usize,
}

impl fmt::Debug for GcpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpProvider")
            .field("project_id", &self.project_id)
            .field("location", &self.location)
            .field("registry", &self.registry)
            .field("bucket", &self.bucket)
            .field("storage_endpoint", &self.gcs.endpoint())
            .field("credentials", self.gcs.tokens())
            .field("chunk", &self.chunk)
            .finish()
    }
}

impl GcpProvider {
    /// Builds a provider from its settings: validates them and reads the
    /// credential files they lead to. Fetches nothing.
    pub async fn from_settings(settings: serde_json::Value, ctx: Context) -> Result<Self, PluginError> {
        let settings: Settings = sdk::parse_settings(settings)?;
        settings.validate()?;
        let source = credentials::resolve(settings.credentials.as_ref(), &ctx).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A stalled transfer fails (and resumes) instead of hanging; a
            // whole transfer may take as long as it needs.
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("credhost-gcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| send_error("cannot build the HTTP client", &e))?;
        let tokens = Arc::new(TokenSource::new(source, http.clone())?);
        tracing::debug!("credentials: {}", tokens.source().describe());
        let gcs = Arc::new(Gcs::new(settings.storage_base()?, http, tokens));
        Ok(Self {
            project_id: settings.project_id,
            location: settings.location,
            registry: settings.registry,
            bucket: settings.bucket,
            gcs,
            chunk: upload::DEFAULT_CHUNK,
        })
    }

    /// Uses resumable chunks of `bytes` (a multiple of 256 KiB) instead of
    /// the default 16 MiB.
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk = bytes;
        self
    }

    /// The storage client.
    pub fn gcs(&self) -> &Arc<Gcs> {
        &self.gcs
    }
}

impl Plugin for GcpProvider {
    const NAME: &'static str = "gcp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    async fn new(settings: serde_json::Value, ctx: Context) -> Result<Self, PluginError> {
        Self::from_settings(settings, ctx).await
    }
}

impl CredentialProvider for GcpProvider {
    async fn registry_auth(&self, req: RegistryRequest) -> Result<Option<RegistryAuth>, PluginError> {
        let server = registry::server_for(&self.registry, req.registry.as_ref().into_option().map(|r| r.as_str()))?;
        // One access token serves every repository: `scope` needs no answer.
        let token = self.gcs.tokens().token().await?;
        Ok(Some(registry::auth(server, token)))
    }

    async fn upload(&self, req: Upload) -> Result<TransferResult, PluginError> {
        let started = std::time::Instant::now();
        let r = upload::upload(&self.gcs, &self.bucket, req, self.chunk).await?;
        tracing::info!("stored gs://{}/{} ({} bytes, {}) in {:.2?}", r.bucket, r.name, r.size, r.checksum, started.elapsed());
        Ok(r)
    }

    async fn download(&self, req: Download) -> Result<TransferResult, PluginError> {
        let started = std::time::Instant::now();
        let r = download::download(&self.gcs, req).await?;
        tracing::info!("fetched gs://{}/{} ({} bytes, {}) in {:.2?}", r.bucket, r.name, r.size, r.checksum, started.elapsed());
        Ok(r)
    }

    async fn credentials(&self, _req: CredentialsRequest) -> Result<Vec<CredentialEntry>, PluginError> {
        let token = self.gcs.tokens().token().await?;
        let mut out = vec![CredentialEntry::plain("GOOGLE_APPLICATION_PROJECT_ID", &self.project_id)];
        if let Some(json) = self.gcs.tokens().source().json() {
            out.push(CredentialEntry::secret("GOOGLE_APPLICATION_CREDENTIALS", json.clone()));
        }
        out.push(CredentialEntry::plain("GOOGLE_APPLICATION_LOCATION", &self.location));
        out.push(CredentialEntry::plain("PROJECTS_BUCKET", &self.bucket));
        out.push(CredentialEntry::plain("REGISTRY", &self.registry));
        let auth = registry::auth(self.registry.clone(), token);
        out.push(CredentialEntry::secret("REGISTRY_TOKEN", auth.registry_token()));
        Ok(out)
    }

    async fn check(&self, _req: CheckRequest) -> Result<CheckReport, PluginError> {
        let source = self.gcs.tokens().source().describe();
        let registry = match self.gcs.tokens().token().await {
            Ok(t) => CheckItem::ok(
                "registry",
                format!("{}: access token from {source}, valid {} s", self.registry, t.lifetime),
            ),
            Err(e) => CheckItem::failed("registry", format!("{}: no access token from {source}: {}", self.registry, e.message)),
        };
        let label = format!("gcs bucket gs://{} at {}", self.bucket, self.gcs.endpoint());
        let storage = match self.gcs.bucket(&self.bucket).await {
            Ok(()) => CheckItem::ok("storage", label),
            Err(e) => CheckItem::failed("storage", format!("{label}: {}", e.message)),
        };
        let mut report = CheckReport::default();
        report.items.push(storage);
        report.items.push(registry);
        Ok(report)
    }
}

credhost_plugin_api::export_plugin!(GcpProvider);
