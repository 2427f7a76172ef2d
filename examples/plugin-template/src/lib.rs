//! A credhost provider: registry credentials from an environment variable,
//! projects as files in a directory (`root/BUCKET/NAME`).
use credhost_plugin_sdk::{tokio::fs, *};
use std::path::PathBuf;

pub struct Dir {
    root: PathBuf,
    registry: String,
    password: Secret,
}

impl Plugin for Dir {
    const NAME: &'static str = "dir";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CAPABILITIES: Capabilities = Capabilities::ALL.without(Capabilities::PRESIGN);
    const REGISTRY_SETTING: Option<&'static str> = Some("registry");
    const IDENTITY_ENV_SETTINGS: &'static [&'static str] = &["password_env"];

    async fn new(settings: serde_json::Value, ctx: Context) -> Result<Self> {
        let text = |key: &str| settings[key].as_str().ok_or_else(|| Error::config(key, format!("`{key}` is required")));
        let password = secret_from_env("password_env", text("password_env")?)?;
        Ok(Dir { root: ctx.resolve(text("root")?), registry: text("registry")?.to_owned(), password })
    }
}

impl Provider for Dir {
    async fn registry_auth(&self, _req: RegistryRequest) -> Result<Option<RegistryAuth>> {
        Ok(Some(RegistryAuth::basic(&self.registry, "deploy", self.password.clone())))
    }
    async fn upload(&self, req: Upload) -> Result<Stored> {
        let target = self.root.join("projects").join(&req.name);
        let dir = target.parent().map(PathBuf::from).unwrap_or_default();
        fs::create_dir_all(&dir).await?;
        let mut out = AtomicFile::create_in(&dir, "upload").await?;
        let done = copy(req.source.into_reader().await?, &mut out, &req.progress).await?;
        out.persist(&target).await?;
        Ok(Stored::new("projects", req.name, done.size, done.checksum()))
    }
    async fn download(&self, req: Download) -> Result<Stored> {
        let file = fs::File::open(self.root.join(&req.bucket).join(&req.name)).await?;
        let mut out = req.dest.open().await?;
        let done = copy(file, &mut out, &req.progress).await?;
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
