//! The provider: ECR for the registry, S3 for the projects bucket.

use credhost_plugin_sdk::{
    parse_settings, registry_host, Capabilities, Context, DeleteRequest, Download, Entry, Error, ErrorKind, Grant,
    GrantRequest, Plugin, PresignRequest, Presigned, Probe, Provider, RegistryAuth, RegistryRequest, Result, Secret,
    Stored, Upload, WorkloadRequest,
};
use credhost_s3_transfer::store::S3Bucket;

use crate::{clients::Clients, registry, settings::Settings, store};

/// The provider of one instance.
pub struct AwsProvider {
    pub(crate) clients: Clients,
    pub(crate) registry: String,
    pub(crate) registry_ids: Vec<String>,
    pub(crate) region: String,
    pub(crate) store: S3Bucket,
    endpoint_url: Option<String>,
    s3_endpoint_url: Option<String>,
    sts_endpoint_url: Option<String>,
    pub(crate) force_path_style: bool,
    pub(crate) job_role_arn: Option<String>,
    pub(crate) job_external_id: Option<String>,
    pub(crate) kubelet_role_arn: Option<String>,
}

impl Plugin for AwsProvider {
    const NAME: &'static str = "aws";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "ECR registry tokens and S3 storage, credentials from aws-config's chain";
    const REGISTRY_SETTING: Option<&'static str> = Some("registry");
    const CAPABILITIES: Capabilities = Capabilities::ALL;
    const CREATE_ONLY: bool = true;
    const MULTI_PART: bool = true;
    // The default credential chain reads these without any setting naming
    // them: keys, profiles, web identity, container and instance metadata,
    // and the files under the home directory.
    const IDENTITY_ENV: &'static [&'static str] = &["AWS_*", "HOME", "USERPROFILE"];

    async fn new(settings: credhost_plugin_sdk::serde_json::Value, _ctx: Context) -> Result<Self> {
        let s: Settings = parse_settings(settings)?;
        for (key, value) in [("region", &s.region), ("registry", &s.registry), ("bucket", &s.bucket)] {
            if value.trim().is_empty() {
                return Err(Error::config(key, format!("`{key}` must not be empty")));
            }
        }
        credhost_s3_transfer::check_bucket_name(&s.bucket).map_err(|why| Error::config("bucket", why))?;
        let clients = Clients::new(&s).await?;
        let store = store::bucket(&clients, &s)?;
        Ok(Self {
            registry: registry_host(&s.registry),
            registry_ids: s.registry_ids,
            region: s.region,
            store,
            endpoint_url: s.endpoint_url,
            s3_endpoint_url: s.s3_endpoint_url,
            sts_endpoint_url: s.sts_endpoint_url,
            force_path_style: s.force_path_style,
            job_role_arn: s.job_role_arn,
            job_external_id: s.job_external_id,
            kubelet_role_arn: s.kubelet_role_arn,
            clients,
        })
    }
}

impl AwsProvider {
    /// Where STS answers, when not AWS's own endpoint.
    pub(crate) fn sts_endpoint(&self) -> Option<&str> {
        self.sts_endpoint_url.as_deref().or(self.endpoint_url.as_deref())
    }

    /// Where S3 answers, when not AWS's own endpoint.
    pub(crate) fn s3_endpoint(&self) -> Option<&str> {
        self.s3_endpoint_url.as_deref().or(self.endpoint_url.as_deref())
    }

    async fn token(&self) -> Result<RegistryAuth> {
        registry::registry_auth(&self.clients.ecr, &self.registry_ids, &self.registry).await
    }
}

impl Provider for AwsProvider {
    async fn registry_auth(&self, req: RegistryRequest) -> Result<Option<RegistryAuth>> {
        if !req.is_for(&self.registry) {
            return Err(Error::new(
                ErrorKind::NOT_FOUND,
                format!(
                    "this platform's registry is {}, not {}",
                    self.registry,
                    registry_host(req.registry.as_deref().unwrap_or_default())
                ),
            ));
        }
        self.token().await.map(Some)
    }

    async fn upload(&self, req: Upload) -> Result<Stored> {
        self.store.upload(req).await
    }

    async fn download(&self, req: Download) -> Result<Stored> {
        self.store.download(req).await
    }

    async fn credentials(&self) -> Result<Vec<Entry>> {
        let creds = self.clients.credentials().await?;
        let mut out = vec![
            Entry::plain("AWS_ACCESS_KEY_ID", creds.access_key_id()),
            Entry::secret("AWS_SECRET_ACCESS_KEY", Secret::new(creds.secret_access_key())),
        ];
        if let Some(token) = creds.session_token() {
            out.push(Entry::secret("AWS_SESSION_TOKEN", Secret::new(token)));
        }
        out.push(Entry::plain("AWS_DEFAULT_REGION", &self.region));
        if let Some(u) = &self.endpoint_url {
            out.push(Entry::plain("AWS_ENDPOINT_URL", u));
        }
        if let Some(u) = &self.s3_endpoint_url {
            out.push(Entry::plain("AWS_ENDPOINT_URL_S3", u));
        }
        out.push(Entry::plain("PROJECTS_BUCKET", self.store.bucket()));
        out.push(Entry::plain("REGISTRY", &self.registry));
        out.push(Entry::secret("REGISTRY_TOKEN", self.token().await?.registry_token()));
        Ok(out)
    }

    async fn check(&self) -> Result<Vec<Probe>> {
        let registry = match self.token().await {
            Ok(auth) => Probe::ok("registry", format!("ECR token for {} (user {})", auth.server, auth.username)),
            Err(e) => Probe::failed("registry", format!("ECR token for {}: {}", self.registry, e.message)),
        };
        Ok(vec![self.store.check().await, registry])
    }

    async fn presign(&self, req: PresignRequest) -> Result<Presigned> {
        self.store.presign(req).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        self.store.delete(req).await
    }

    async fn grant(&self, req: GrantRequest) -> Result<Grant> {
        self.grant_job(req).await
    }

    async fn workload_registry_auth(&self, req: WorkloadRequest) -> Result<Option<RegistryAuth>> {
        self.workload_auth(req).await.map(Some)
    }
}
