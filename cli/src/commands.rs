//! One function per command, each taking its resolved arguments.

use std::sync::{Arc, Mutex};

use credhost::{
    api::PresignMethod, CredentialEntry, DownloadOptions, Host, ProviderHandle, Registries, UploadOptions, REDACTED,
};

use crate::{
    args::{Command, DockerConfig, Global},
    docker_config,
    error::{exit, Error, Result},
    flags::TokenFormat,
    job_env,
    output::{print, print_json, println},
    progress::Bar,
};

/// The provider an operation is using, for clean-up after an interruption.
#[derive(Clone, Default)]
pub struct Active(Arc<Mutex<Option<ProviderHandle>>>);

impl Active {
    /// The provider, if an operation took one.
    pub fn get(&self) -> Option<ProviderHandle> {
        self.0.lock().ok().and_then(|p| p.clone())
    }

    async fn take(&self, host: &Host) -> Result<ProviderHandle> {
        let p = host.active().await?;
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(p.clone());
        }
        Ok(p)
    }
}

/// Runs `command` and returns the exit code.
pub async fn run(global: &Global, command: &Command, active: &Active) -> Result<i32> {
    if let Command::Inspect { file, json } = command {
        // A file is inspected with or without a configuration.
        return match Host::from_file(&global.config, global.platform.as_deref()) {
            Ok(host) => inspect(&host, file, *json, global.verbose),
            Err(_) => inspect_with(credhost::loader::Policy::default(), file, *json, global.verbose),
        };
    }
    let host = Host::from_file(&global.config, global.platform.as_deref())?;
    match command {
        Command::Plugins { pin: true, .. } => pins(&host),
        Command::Plugins { json, .. } => plugins(&host, *json),
        Command::Check => check(&host, active).await,
        Command::Token { registry, scope, format } => {
            // `--registry HOST` goes to the instance serving HOST, unless an
            // instance was named.
            let serving = match (registry, &global.platform) {
                (Some(r), None) => host.registry_map()?.resolve(r).map(|route| route.instance),
                _ => None,
            };
            let host = match serving {
                Some(instance) if instance != host.platform() => Host::from_file(&global.config, Some(&instance))?,
                _ => host,
            };
            token(&host, active, registry.as_deref(), scope.as_deref(), *format).await
        }
        Command::Upload { file, name, no_verify, json } => {
            let total = std::fs::metadata(file).ok().map(|m| m.len());
            let provider = active.take(&host).await?;
            let bar = Bar::on_terminal("upload", total, !global.quiet);
            let opts = UploadOptions {
                name: name.clone(),
                no_verify: *no_verify,
                progress: bar.clone().map(|b| b as Arc<dyn credhost::Progress>),
            };
            let result = provider.upload_file(file, &opts).await;
            if let Some(b) = bar {
                b.finish();
            }
            let r = result?;
            if *json {
                print_json(&transfer_json(&r))?;
            } else {
                println(&format!("{} {}", r.bucket, r.name))?;
            }
            Ok(exit::OK)
        }
        Command::Download { bucket, name, dest, force, json } => {
            let provider = active.take(&host).await?;
            let bar = Bar::on_terminal("download", None, !global.quiet);
            let opts =
                DownloadOptions { force: *force, progress: bar.clone().map(|b| b as Arc<dyn credhost::Progress>) };
            let result = provider.download_to_path(bucket, name, dest, &opts).await;
            if let Some(b) = bar {
                b.finish();
            }
            let r = result?;
            if *json {
                let mut v = transfer_json(&r);
                v["path"] = serde_json::Value::String(dest.display().to_string());
                print_json(&v)?;
            } else {
                println(&dest.display().to_string())?;
            }
            Ok(exit::OK)
        }
        Command::Credentials { format, show_secrets, project } => {
            let provider = active.take(&host).await?;
            let mut entries = provider.credentials().await?;
            if let Some((bucket, name, expires)) = project {
                // Whoever holds this URL can read the project: a secret.
                let signed = provider.presign(PresignMethod::GET, bucket, name, *expires).await?;
                entries.push(CredentialEntry::secret("PROJECT_URL", signed.url));
            }
            let text = zeroize::Zeroizing::new(job_env::render(&entries, *show_secrets, format)?);
            print(&text)?;
            let redacted = job_env::redacted_count(&entries, *show_secrets);
            if redacted > 0 && !global.quiet {
                eprintln!(
                    "credhost: {redacted} secret value(s) printed as {REDACTED}; add --show-secrets to print them"
                );
            }
            Ok(exit::OK)
        }
        Command::Presign { method, bucket, name, expires, json } => {
            let provider = active.take(&host).await?;
            let signed = provider.presign(*method, bucket, name, *expires).await?;
            if *json {
                let headers: std::collections::BTreeMap<&str, &str> =
                    signed.headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect();
                print_json(&PresignJson {
                    method: signed.method.as_str(),
                    url: signed.url.expose(),
                    headers,
                    expires_at: signed.expires_at,
                })?;
            } else {
                println(signed.url.expose())?;
                if !signed.headers.is_empty() && !global.quiet {
                    for h in signed.headers.iter() {
                        eprintln!("credhost: note: send the header `{}: {}` with this URL", h.name, h.value);
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Delete { bucket, name } => {
            let provider = active.take(&host).await?;
            provider.delete(bucket, name).await?;
            if !global.quiet {
                eprintln!("credhost: deleted {bucket}/{name} (if it existed)");
            }
            Ok(exit::OK)
        }
        Command::Inspect { file, json } => inspect(&host, file, *json, global.verbose),
        Command::DockerConfig(args) => docker_config(&host, args, global.quiet).await,
    }
}

fn inspect(host: &Host, file: &std::path::Path, json: bool, verbose: u8) -> Result<i32> {
    let policy = credhost::loader::Policy { allow_insecure_permissions: host.config().allow_insecure_permissions };
    inspect_with(policy, file, json, verbose)
}

fn inspect_with(policy: credhost::loader::Policy, file: &std::path::Path, json: bool, verbose: u8) -> Result<i32> {
    let found = credhost::loader::inspect(file, policy);
    let info = found.info.as_ref();
    let capabilities: Vec<&str> = info.map(|i| i.capabilities.names()).unwrap_or_default();
    let panic = info.map(|i| i.panic_strategy().unwrap_or("not recorded"));
    let verdict = match &found.refused {
        None => "would load here".to_owned(),
        Some(e) => format!("refused: {e}"),
    };
    if json {
        print_json(&serde_json::json!({
            "path": file.display().to_string(),
            "sha256": found.sha256,
            "name": info.map(|i| i.name.to_string()),
            "version": info.map(|i| i.version.to_string()),
            "api_version": info.map(|i| i.api_version.to_string()),
            "interface": found.interface,
            "capabilities": capabilities,
            "panic": panic,
            "description": info.and_then(|i| i.description()),
            "status": verdict,
        }))?;
    } else {
        let mut text = format!("file:        {}\n", file.display());
        text.push_str(&format!("sha256:      {}\n", found.sha256.as_deref().unwrap_or("-")));
        if let Some(i) = info {
            text.push_str(&format!("plugin:      {} {}\n", i.name, i.version));
            if let Some(d) = i.description() {
                text.push_str(&format!("             {d}\n"));
            }
            text.push_str(&format!(
                "interface:   {} (built against {})\n",
                found.interface.unwrap_or("-"),
                i.api_version
            ));
            text.push_str(&format!("offers:      {}\n", capabilities.join(", ")));
            text.push_str(&format!("panic:       {}\n", panic.unwrap_or("-")));
        }
        text.push_str(&format!("status:      {verdict}\n"));
        if verbose > 0 {
            if let Some(credhost::loader::LoadError::LayoutMismatch { report, .. }) = &found.refused {
                text.push_str(&format!("layout check:\n{report}\n"));
            }
        }
        print(&text)?;
    }
    Ok(match &found.refused {
        None => exit::OK,
        Some(e) => crate::error::exit_code(e.kind()),
    })
}

fn pins(host: &Host) -> Result<i32> {
    let mut text = String::new();
    let mut code = exit::OK;
    for name in host.config().instances.keys() {
        let file = host.plugin_file(name)?;
        match credhost::loader::sha256_file(&file) {
            Ok(sha) => text.push_str(&format!("[plugins.{name}]   # {}\nsha256 = \"{sha}\"\n\n", file.display())),
            Err(e) => {
                eprintln!("credhost: plugins.{name}: cannot read {}: {e}", file.display());
                code = exit::NOT_FOUND;
            }
        }
    }
    print(&text)?;
    Ok(code)
}

fn plugins(host: &Host, json: bool) -> Result<i32> {
    let rows = host.plugin_report();
    if json {
        print_json(&rows)?;
    } else {
        let mut text = String::new();
        for r in &rows {
            let active = if r.name == host.platform() { "*" } else { " " };
            let plugin = if r.plugin == r.name { String::new() } else { format!(" (plugin {})", r.plugin) };
            text.push_str(&format!(
                "{active} {:<10} {:<8} api {:<6} {}{plugin}\n",
                r.name,
                r.version.as_deref().unwrap_or("-"),
                r.api_version.as_deref().unwrap_or("-"),
                r.status
            ));
            if !r.capabilities.is_empty() {
                text.push_str(&format!("    offers: {}\n", r.capabilities.join(", ")));
            }
            text.push_str(&format!("    path:   {}\n", r.path.as_deref().unwrap_or("-")));
            text.push_str(&format!("    sha256: {}\n", r.sha256.as_deref().unwrap_or("-")));
        }
        print(&text)?;
    }
    // The active instance's row says whether its plugin loads.
    let refused_active =
        rows.iter().find(|r| r.name == host.platform()).is_some_and(|r| r.status.starts_with("refused"));
    Ok(if refused_active { exit::PLUGIN } else { exit::OK })
}

async fn check(host: &Host, active: &Active) -> Result<i32> {
    let provider = active.take(host).await?;
    let report = provider.check().await?;
    let mut text = String::new();
    for item in report.items.iter() {
        text.push_str(&format!("{} {}: {}\n", if item.ok { "ok  " } else { "FAIL" }, item.component, item.detail));
    }
    print(&text)?;
    if report.ok() {
        Ok(exit::OK)
    } else {
        eprintln!("credhost: check of platform `{}` failed", provider.name());
        Ok(exit::CHECK_FAILED)
    }
}

async fn token(
    host: &Host,
    active: &Active,
    registry: Option<&str>,
    scope: Option<&str>,
    format: TokenFormat,
) -> Result<i32> {
    let provider = active.take(host).await?;
    let auth = provider.registry_auth(registry, scope).await?;
    match (format, auth) {
        (TokenFormat::Docker, Some(a)) => println(a.registry_token().expose())?,
        (TokenFormat::Docker, None) => {}
        (TokenFormat::Json, Some(a)) => print_json(&TokenJson {
            server: a.server.as_str(),
            username: a.username.as_str(),
            password: a.secret.expose(),
            expires_at: a.expires_at.into_option(),
        })?,
        (TokenFormat::Json, None) => println("null")?,
    }
    Ok(exit::OK)
}

async fn docker_config(host: &Host, args: &DockerConfig, quiet: bool) -> Result<i32> {
    if let Some(target) = &args.target {
        // Replacing the file being merged is the point of --merge; anything else needs --force.
        let replaces_merged = args.merge.as_ref().is_some_and(|m| same_file(m, target));
        if !args.force && !replaces_merged && std::fs::symlink_metadata(target).is_ok() {
            return Err(credhost::Error::Exists(target.clone()).into());
        }
    }
    let base = match &args.merge {
        Some(m) => docker_config::read(m)?,
        None => serde_json::Map::new(),
    };
    let registries = Registries::new(host.config().clone())?;
    let opts = docker_config::Options { static_auths: args.static_auths, registries: &args.registries, quiet };
    let doc = zeroize::Zeroizing::new(docker_config::build(&registries, base, &opts).await?);
    match &args.target {
        None => print(&doc)?,
        Some(target) => {
            docker_config::write_private(target, doc.as_bytes())?;
            if !quiet {
                eprintln!("credhost: wrote {}", target.display());
            }
        }
    }
    if !args.static_auths && !quiet {
        docker_config::note_helper_config(host.config());
    }
    Ok(exit::OK)
}

/// Whether two paths name the same file (either may not exist yet).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `token --format json`, borrowed: the password is copied only into the output.
#[derive(serde::Serialize)]
struct TokenJson<'a> {
    server: &'a str,
    username: &'a str,
    password: &'a str,
    expires_at: Option<i64>,
}

/// `presign --json`, borrowed: the URL is copied only into the output.
#[derive(serde::Serialize)]
struct PresignJson<'a> {
    method: &'a str,
    url: &'a str,
    headers: std::collections::BTreeMap<&'a str, &'a str>,
    expires_at: i64,
}

fn transfer_json(r: &credhost::TransferResult) -> serde_json::Value {
    serde_json::json!({
        "bucket": r.bucket.as_str(),
        "name": r.name.as_str(),
        "size": r.size,
        "checksum": r.checksum.as_str(),
    })
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Stdout(e)
    }
}
