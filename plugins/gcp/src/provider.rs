//! The provider: Artifact Registry tokens and the GCS projects bucket, with
//! the credentials its settings lead to.

use std::{fmt, sync::Arc, time::Duration};

use credhost_plugin_sdk::{
    parse_settings, Capabilities, Context, DeleteRequest, Download, Entry, Error as PluginError, Grant, GrantRequest,
    Method, Plugin, PresignRequest, Presigned, Probe, Provider, RegistryAuth, RegistryRequest, Stored, Upload,
    WorkloadRequest,
};

use crate::{
    auth::{self, token::TokenSource},
    error::send_error,
    registry,
    settings::Settings,
    store::{download, presign, upload, Gcs},
};

/// The provider.
pub struct GcpProvider {
    pub(crate) project_id: String,
    location: String,
    pub(crate) registry: String,
    pub(crate) bucket: String,
    pub(crate) gcs: Arc<Gcs>,
    pub(crate) iam: reqwest::Url,
    pub(crate) sts: reqwest::Url,
    pub(crate) job_service_account: Option<String>,
    pub(crate) job_token_max_lifetime: u64,
    pub(crate) kubelet_audience: Option<String>,
    pub(crate) kubelet_service_account: Option<String>,
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
        let settings: Settings = parse_settings(settings)?;
        settings.validate()?;
        let source = auth::resolve(settings.credentials.as_ref(), &ctx).await?;
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
        let iam = settings.iam_base()?;
        let sts = settings.sts_base()?;
        Ok(Self {
            sts,
            job_service_account: settings.job_service_account,
            job_token_max_lifetime: settings.job_token_max_lifetime.unwrap_or(crate::grant::DEFAULT_MAX_TOKEN_LIFETIME),
            kubelet_audience: settings.kubelet_audience.as_deref().and_then(crate::workload::pool_audience),
            kubelet_service_account: settings.kubelet_service_account,
            project_id: settings.project_id,
            location: settings.location,
            registry: settings.registry,
            bucket: settings.bucket,
            gcs,
            iam,
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
    const DESCRIPTION: &'static str = "Artifact Registry / GCR tokens and GCS storage";
    const REGISTRY_SETTING: Option<&'static str> = Some("registry");
    const CAPABILITIES: Capabilities = Capabilities::ALL;
    const CREATE_ONLY: bool = true;
    const MULTI_PART: bool = true;
    // Application Default Credentials, gcloud's configuration and the
    // metadata server are found through these, without a setting naming them.
    const IDENTITY_ENV: &'static [&'static str] =
        &["GOOGLE_*", "CLOUDSDK_*", "GCE_METADATA*", "HOME", "XDG_CONFIG_HOME", "APPDATA"];
    const IDENTITY_ENV_SETTINGS: &'static [&'static str] = &["credentials.service_account_json_env"];

    async fn new(settings: serde_json::Value, ctx: Context) -> Result<Self, PluginError> {
        Self::from_settings(settings, ctx).await
    }
}

impl Provider for GcpProvider {
    async fn registry_auth(&self, req: RegistryRequest) -> Result<Option<RegistryAuth>, PluginError> {
        let server = registry::server_for(&self.registry, req.registry.as_deref())?;
        // One access token serves every repository: `scope` needs no answer.
        let token = self.gcs.tokens().token().await?;
        Ok(Some(registry::auth(server, token)))
    }

    async fn workload_registry_auth(&self, req: WorkloadRequest) -> Result<Option<RegistryAuth>, PluginError> {
        self.workload_auth(req).await.map(Some)
    }

    async fn upload(&self, req: Upload) -> Result<Stored, PluginError> {
        upload::upload(&self.gcs, &self.bucket, req, self.chunk).await
    }

    async fn download(&self, req: Download) -> Result<Stored, PluginError> {
        download::download(&self.gcs, req).await
    }

    async fn credentials(&self) -> Result<Vec<Entry>, PluginError> {
        let token = self.gcs.tokens().token().await?;
        let mut out = vec![Entry::plain("GOOGLE_APPLICATION_PROJECT_ID", &self.project_id)];
        if let Some(json) = self.gcs.tokens().source().json() {
            out.push(Entry::secret("GOOGLE_APPLICATION_CREDENTIALS", json.clone()));
        }
        out.push(Entry::plain("GOOGLE_APPLICATION_LOCATION", &self.location));
        out.push(Entry::plain("PROJECTS_BUCKET", &self.bucket));
        out.push(Entry::plain("REGISTRY", &self.registry));
        let auth = registry::auth(self.registry.clone(), token);
        out.push(Entry::secret("REGISTRY_TOKEN", auth.registry_token()));
        Ok(out)
    }

    async fn check(&self) -> Result<Vec<Probe>, PluginError> {
        let source = self.gcs.tokens().source().describe();
        let registry = match self.gcs.tokens().token().await {
            Ok(t) => {
                Probe::ok("registry", format!("{}: access token from {source}, valid {} s", self.registry, t.lifetime))
            }
            Err(e) => {
                Probe::failed("registry", format!("{}: no access token from {source}: {}", self.registry, e.message))
            }
        };
        let label = format!("gcs bucket gs://{} at {}", self.bucket, self.gcs.endpoint());
        let storage = match self.gcs.bucket(&self.bucket).await {
            Ok(()) => Probe::ok("storage", label),
            Err(e) => Probe::failed("storage", format!("{label}: {}", e.message)),
        };
        Ok(vec![storage, registry])
    }

    async fn presign(&self, req: PresignRequest) -> Result<Presigned, PluginError> {
        let bucket = match req.method {
            Method::Get => req.bucket.as_str(),
            Method::Put => self.bucket.as_str(),
        };
        let if_absent = req.method == Method::Put && req.if_absent().is_some();
        presign::presign(&self.gcs, &self.iam, req.method, bucket, &req.name, req.expires, if_absent).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), PluginError> {
        self.gcs.delete(&req.bucket, &req.name, None).await
    }

    async fn grant(&self, req: GrantRequest) -> Result<Grant, PluginError> {
        self.grant_job(req).await
    }
}
