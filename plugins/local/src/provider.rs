//! The provider: the registry and the store its settings describe.

use credhost_plugin_sdk::{
    parse_settings, Capabilities, Context, DeleteRequest, Download, Entry, Error, ErrorKind, Grant, GrantRequest,
    Plugin, PresignRequest, Presigned, Probe, Provider, RegistryAuth, RegistryRequest, Result, Stored, Upload,
};

use crate::{registry::Registry, settings::Settings, store::Store};

/// The provider of one instance.
pub struct LocalProvider {
    registry: Registry,
    store: Store,
}

impl Plugin for LocalProvider {
    const NAME: &'static str = "local";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "a self-hosted registry and a directory or S3-compatible store";
    const CAPABILITIES: Capabilities = Capabilities::V1_2;
    const CREATE_ONLY: bool = true;
    const MULTI_PART: bool = true;
    const REGISTRY_SETTING: Option<&'static str> = Some("registry.url");
    const IDENTITY_ENV_SETTINGS: &'static [&'static str] = &[
        "registry.username_env",
        "registry.password_env",
        "storage.access_key_id_env",
        "storage.secret_access_key_env",
    ];

    async fn new(settings: serde_json::Value, ctx: Context) -> Result<Self> {
        let settings: Settings = parse_settings(settings)?;
        let registry = Registry::new(settings.registry)?;
        let store = Store::new(settings.storage, &ctx)?;
        Ok(Self { registry, store })
    }
}

impl Provider for LocalProvider {
    async fn registry_auth(&self, req: RegistryRequest) -> Result<Option<RegistryAuth>> {
        if !req.is_for(self.registry.host()) {
            return Err(Error::new(
                ErrorKind::NOT_FOUND,
                format!(
                    "this platform's registry is {}, not {}",
                    self.registry.host(),
                    req.registry.as_deref().unwrap_or_default()
                ),
            ));
        }
        self.registry.auth(req.scope.as_deref(), req.form).await
    }

    async fn upload(&self, req: Upload) -> Result<Stored> {
        self.store.upload(req).await
    }

    async fn download(&self, req: Download) -> Result<Stored> {
        self.store.download(req).await
    }

    async fn credentials(&self) -> Result<Vec<Entry>> {
        let mut out = self.store.credentials();
        out.push(Entry::plain("REGISTRY", self.registry.host()));
        if let Some(auth) = self.registry.auth(None, credhost_plugin_sdk::AuthForm::Any).await? {
            out.push(Entry::secret("REGISTRY_TOKEN", auth.registry_token()));
        }
        Ok(out)
    }

    async fn check(&self) -> Result<Vec<Probe>> {
        Ok(vec![self.store.check().await, self.registry.check().await])
    }

    async fn presign(&self, req: PresignRequest) -> Result<Presigned> {
        self.store.presign(req).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        self.store.delete(req).await
    }

    async fn grant(&self, mut req: GrantRequest) -> Result<Grant> {
        if req.bucket.is_empty() {
            req.bucket = self.store.bucket().to_owned();
        }
        let mut grant = Grant { expires_at: req.ends_at(), ..Grant::default() };
        // The registry first: a registry that cannot narrow refuses before
        // any storage session is made.
        self.registry.grant(&req, &mut grant).await?;
        self.store.grant(&req, &mut grant).await?;
        Ok(grant)
    }
}
