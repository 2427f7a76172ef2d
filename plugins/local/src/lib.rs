//! The `local` credhost plugin: a self-hosted registry (open, htpasswd or
//! token auth) and project storage in a directory or on any S3-compatible
//! endpoint. This file is only the export glue; see the modules.

pub mod error;
pub mod fs_store;
pub mod registry;
pub mod s3_store;
pub mod settings;

use credhost_plugin_api::{
    sdk::{self, Context, CredentialProvider, Download, Plugin, Upload},
    CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, ErrorKind, PluginError,
    RegistryAuth, RegistryRequest, TransferResult,
};

use crate::{
    fs_store::FsStore,
    registry::{AuthForm, Registry},
    s3_store::{S3Config, S3Store},
    settings::{Settings, StorageSettings},
};

/// Where projects are kept.
pub enum Store {
    /// A directory.
    Fs(FsStore),
    /// An S3-compatible bucket.
    S3(S3Store),
}

/// The provider.
pub struct LocalProvider {
    registry: Registry,
    store: Store,
}

impl Plugin for LocalProvider {
    const NAME: &'static str = "local";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    async fn new(settings: serde_json::Value, ctx: Context) -> Result<Self, PluginError> {
        let settings: Settings = sdk::parse_settings(settings)?;
        let registry = Registry::new(settings.registry)?;
        let store = match settings.storage {
            StorageSettings::Fs { root, bucket } => Store::Fs(FsStore::new(ctx.resolve(&root), bucket)?),
            StorageSettings::S3 {
                endpoint,
                region,
                bucket,
                access_key_id_env,
                secret_access_key_env,
                part_size_mib,
                concurrency,
            } => {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(PluginError::config("storage.endpoint", format!("{endpoint:?} is not an http(s) URL")));
                }
                let opts = credhost_s3_transfer::store::transfer_options("storage.", part_size_mib, concurrency)?;
                let access_key_id = sdk::secret_from_env("storage.access_key_id_env", &access_key_id_env)?.expose().to_owned();
                let secret_access_key = sdk::secret_from_env("storage.secret_access_key_env", &secret_access_key_env)?;
                Store::S3(S3Store::new(S3Config { endpoint, region, bucket, access_key_id, secret_access_key, opts }))
            }
        };
        Ok(Self { registry, store })
    }
}

impl CredentialProvider for LocalProvider {
    async fn registry_auth(&self, req: RegistryRequest) -> Result<Option<RegistryAuth>, PluginError> {
        if let Some(r) = req.registry.as_ref().into_option() {
            if !self.registry.serves(r) {
                return Err(PluginError::new(
                    ErrorKind::NOT_FOUND,
                    format!("this platform's registry is {}, not {r}", self.registry.host()),
                ));
            }
        }
        let scope = req.extra.get("scope").map(|s| s.as_str().to_owned());
        let scope = scope.or_else(|| req.extra.get("repository").map(|r| format!("repository:{r}:pull,push")));
        let form = AuthForm::from_request(req.extra.get("auth_form").map(|f| f.as_str()));
        self.registry.auth(scope.as_deref(), form).await
    }

    async fn upload(&self, req: Upload) -> Result<TransferResult, PluginError> {
        let started = std::time::Instant::now();
        let r = match &self.store {
            Store::Fs(s) => s.upload(req).await,
            Store::S3(s) => s.bucket.upload(req).await,
        }?;
        tracing::info!("stored {}/{} ({} bytes, {}) in {:.2?}", r.bucket, r.name, r.size, r.checksum, started.elapsed());
        Ok(r)
    }

    async fn download(&self, req: Download) -> Result<TransferResult, PluginError> {
        let started = std::time::Instant::now();
        let r = match &self.store {
            Store::Fs(s) => s.download(req).await,
            Store::S3(s) => s.bucket.download(req).await,
        }?;
        tracing::info!("fetched {}/{} ({} bytes, {}) in {:.2?}", r.bucket, r.name, r.size, r.checksum, started.elapsed());
        Ok(r)
    }

    async fn credentials(&self, _req: CredentialsRequest) -> Result<Vec<CredentialEntry>, PluginError> {
        let mut out = Vec::new();
        match &self.store {
            Store::Fs(s) => {
                out.push(CredentialEntry::plain("CREDHOST_STORAGE", "fs"));
                out.push(CredentialEntry::plain("CREDHOST_STORAGE_ROOT", s.root().display().to_string()));
                out.push(CredentialEntry::plain("PROJECTS_BUCKET", s.bucket()));
            }
            Store::S3(s) => {
                let (endpoint, region, key_id, secret) = s.connection();
                out.push(CredentialEntry::plain("CREDHOST_STORAGE", "s3"));
                out.push(CredentialEntry::plain("AWS_ENDPOINT_URL", endpoint));
                out.push(CredentialEntry::plain("AWS_ACCESS_KEY_ID", key_id));
                out.push(CredentialEntry::secret("AWS_SECRET_ACCESS_KEY", secret.clone()));
                out.push(CredentialEntry::plain("AWS_DEFAULT_REGION", region));
                out.push(CredentialEntry::plain("PROJECTS_BUCKET", s.bucket.bucket()));
            }
        }
        out.push(CredentialEntry::plain("REGISTRY", self.registry.host()));
        if let Some(auth) = self.registry.auth(None, AuthForm::Bearer).await? {
            out.push(CredentialEntry::secret("REGISTRY_TOKEN", auth.registry_token()));
        }
        Ok(out)
    }

    async fn check(&self, _req: CheckRequest) -> Result<CheckReport, PluginError> {
        let storage = match &self.store {
            Store::Fs(s) => s.check().await,
            Store::S3(s) => s.bucket.check().await,
        };
        let registry = self.registry.check().await;
        let mut report = CheckReport::default();
        report.items.push(storage);
        report.items.push(registry);
        Ok(report)
    }
}

credhost_plugin_api::export_plugin!(LocalProvider);
