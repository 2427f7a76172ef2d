//! A credhost provider: registry credentials from an environment variable,
//! projects as files in a directory (`root/BUCKET/NAME`). Its settings are
//! the `Dir` struct: a key it does not know is refused, by name.
use credhost_plugin_sdk::{serde::Deserialize, tokio::fs, *};
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(crate = "credhost_plugin_sdk::serde", deny_unknown_fields)]
pub struct Dir {
    root: PathBuf,
    registry: String,
    password_env: String,
    #[serde(skip)]
    password: Secret,
}

impl Plugin for Dir {
    const NAME: &'static str = "dir";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "projects in a directory, a registry password from the environment";
    const CAPABILITIES: Capabilities = Capabilities::V1_1.without(Capabilities::PRESIGN);
    const REGISTRY_SETTING: Option<&'static str> = Some("registry");
    const IDENTITY_ENV_SETTINGS: &'static [&'static str] = &["password_env"];

    async fn new(settings: serde_json::Value, ctx: Context) -> Result<Self> {
        let mut dir: Dir = parse_settings(settings)?;
        dir.root = ctx.base_dir.join(&dir.root);
        dir.password = secret_from_env("password_env", &dir.password_env)?;
        Ok(dir)
    }
}

impl Provider for Dir {
    async fn registry_auth(&self, req: RegistryRequest) -> Result<Option<RegistryAuth>> {
        req.ensure_for(&self.registry)?;
        Ok(Some(RegistryAuth::basic(&self.registry, "deploy", self.password.clone())))
    }
    async fn upload(&self, req: Upload) -> Result<Stored> {
        let target = self.root.join("projects").join(&req.name);
        let mut out = AtomicFile::create_for(&target).await?;
        let done = copy(req.source.into_reader().await?, &mut out, &req.progress).await?;
        out.persist(&target).await?;
        Ok(Stored::new("projects", req.name, done.size, done.checksum()))
    }
    async fn download(&self, req: Download) -> Result<Stored> {
        let file = fs::File::open(self.root.join(&req.bucket).join(&req.name)).await?;
        let stored = file.metadata().await?.len();
        let mut out = req.dest.open().await?;
        let done = copy(file, &mut out, &req.progress).await?.verify_size(stored)?;
        out.commit().await?;
        Ok(Stored::new(req.bucket, req.name, done.size, done.checksum()))
    }
    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        let gone = fs::remove_file(self.root.join(&req.bucket).join(&req.name)).await;
        gone.or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e.into()) })
    }
    async fn credentials(&self) -> Result<Vec<Entry>> {
        let token = RegistryAuth::basic(&self.registry, "deploy", self.password.clone()).registry_token();
        Ok(vec![Entry::plain("PROJECTS_BUCKET", "projects"), Entry::secret("REGISTRY_TOKEN", token)])
    }
    async fn check(&self) -> Result<Vec<Probe>> {
        let found = fs::metadata(&self.root).await.is_ok_and(|m| m.is_dir());
        Ok(vec![Probe { component: "storage".into(), ok: found, detail: format!("directory {}", self.root.display()) }])
    }
}

export_plugin!(Dir);
