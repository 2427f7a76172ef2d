//! The `aws` credhost plugin: ECR registry tokens and S3 project storage,
//! with credentials from aws-config's default chain. This file is only the
//! export glue; see the modules.

pub mod clients;
pub mod ecr;
pub mod settings;

use credhost_plugin_api::{
    sdk::{self, Context, CredentialProvider, Download, Plugin, Upload},
    CheckItem, CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, ErrorKind,
    PluginError, RegistryAuth, RegistryRequest, Secret, TransferResult,
};
use credhost_s3_transfer::store::S3Bucket;

use crate::{clients::Clients, settings::Settings};

/// The provider.
pub struct AwsProvider {
    clients: Clients,
    registry: String,
    registry_ids: Vec<String>,
    region: String,
    store: S3Bucket,
    endpoint_url: Option<String>,
    s3_endpoint_url: Option<String>,
}

impl Plugin for AwsProvider {
    const NAME: &'static str = "aws";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    async fn new(settings: serde_json::Value, _ctx: Context) -> Result<Self, PluginError> {
        let s: Settings = sdk::parse_settings(settings)?;
        for (key, value) in [("region", &s.region), ("registry", &s.registry), ("bucket", &s.bucket)] {
            if value.trim().is_empty() {
                return Err(PluginError::config(key, format!("`{key}` must not be empty")));
            }
        }
        let clients = Clients::new(&s).await?;
        let opts = credhost_s3_transfer::store::transfer_options("", s.part_size_mib, s.concurrency)?;
        let place = s.s3_endpoint_url.clone().or_else(|| s.endpoint_url.clone()).unwrap_or_else(|| format!("region {}", s.region));
        let store = S3Bucket::new(clients.s3.clone(), s.bucket.clone(), place, opts);
        Ok(Self {
            clients,
            registry: ecr::host_of(&s.registry),
            registry_ids: s.registry_ids,
            region: s.region,
            store,
            endpoint_url: s.endpoint_url,
            s3_endpoint_url: s.s3_endpoint_url,
        })
    }
}

impl AwsProvider {
    async fn token(&self) -> Result<RegistryAuth, PluginError> {
        ecr::registry_auth(&self.clients.ecr, &self.registry_ids, &self.registry).await
    }
}

impl CredentialProvider for AwsProvider {
    async fn registry_auth(&self, req: RegistryRequest) -> Result<Option<RegistryAuth>, PluginError> {
        if let Some(r) = req.registry.as_ref().into_option() {
            if ecr::host_of(r) != self.registry {
                return Err(PluginError::new(
                    ErrorKind::NOT_FOUND,
                    format!("this platform's registry is {}, not {}", self.registry, ecr::host_of(r)),
                ));
            }
        }
        self.token().await.map(Some)
    }

    async fn upload(&self, req: Upload) -> Result<TransferResult, PluginError> {
        let r = self.store.upload(req).await?;
        tracing::info!("stored {}/{} ({} bytes, {})", r.bucket, r.name, r.size, r.checksum);
        Ok(r)
    }

    async fn download(&self, req: Download) -> Result<TransferResult, PluginError> {
        let r = self.store.download(req).await?;
        tracing::info!("fetched {}/{} ({} bytes, {})", r.bucket, r.name, r.size, r.checksum);
        Ok(r)
    }

    async fn credentials(&self, _req: CredentialsRequest) -> Result<Vec<CredentialEntry>, PluginError> {
        let creds = self.clients.credentials().await?;
        let mut out = vec![
            CredentialEntry::plain("AWS_ACCESS_KEY_ID", creds.access_key_id()),
            CredentialEntry::secret("AWS_SECRET_ACCESS_KEY", Secret::new(creds.secret_access_key())),
        ];
        if let Some(token) = creds.session_token() {
            out.push(CredentialEntry::secret("AWS_SESSION_TOKEN", Secret::new(token)));
        }
        out.push(CredentialEntry::plain("AWS_DEFAULT_REGION", &self.region));
        if let Some(u) = &self.endpoint_url {
            out.push(CredentialEntry::plain("AWS_ENDPOINT_URL", u));
        }
        if let Some(u) = &self.s3_endpoint_url {
            out.push(CredentialEntry::plain("AWS_ENDPOINT_URL_S3", u));
        }
        out.push(CredentialEntry::plain("PROJECTS_BUCKET", self.store.bucket()));
        out.push(CredentialEntry::plain("REGISTRY", &self.registry));
        out.push(CredentialEntry::secret("REGISTRY_TOKEN", self.token().await?.registry_token()));
        Ok(out)
    }

    async fn check(&self, _req: CheckRequest) -> Result<CheckReport, PluginError> {
        let mut report = CheckReport::default();
        report.items.push(self.store.check().await);
        report.items.push(match self.token().await {
            Ok(auth) => CheckItem::ok("registry", format!("ECR token for {} (user {})", auth.server, auth.username)),
            Err(e) => CheckItem::failed("registry", format!("ECR token for {}: {}", self.registry, e.message)),
        });
        Ok(report)
    }
}

credhost_plugin_api::export_plugin!(AwsProvider);
