//! One function per command, each taking its resolved arguments.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use credhost::{
    CredentialEntry, DownloadOptions, Host, PresignMethod, ProviderHandle, Registries, Revealed, UploadOptions,
    REDACTED,
};

use credhost::names::printable;

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
    // The commands that read plugin files (hashing, vetting, loading) run on
    // a blocking thread, so that a signal is answered while they work.
    if let Command::Inspect { file, json } = command {
        // A file is inspected with or without a configuration.
        let policy = match Host::from_file(&global.config, global.platform.as_deref()) {
            Ok(host) => host.policy(),
            Err(_) => credhost::loader::Policy::default(),
        };
        let report = crate::inspect::inspect(file, policy).await?;
        return inspect(&report, file, *json, global.verbose);
    }
    // Pushing and installing work with or without a configuration.
    match command {
        Command::Push { files, reference, platforms, json } => {
            let platform = global.platform.as_deref();
            return crate::distribution::push(
                &global.config,
                platform,
                files,
                reference,
                platforms,
                *json,
                global.quiet,
            )
            .await;
        }
        Command::Install { reference, instance, dir, plugin, write_config, json } => {
            return crate::distribution::install(
                &global.config,
                global.platform.as_deref(),
                reference,
                instance.as_deref(),
                dir.as_deref(),
                plugin.as_deref(),
                *write_config,
                *json,
                global.quiet,
            )
            .await
        }
        _ => {}
    }
    credhost::audit::set_process_label(global.audit_label.as_deref());
    let host = Host::from_file(&global.config, global.platform.as_deref())?;
    match command {
        Command::AuditHash { value } => {
            // Reading the value from stdin blocks.
            let value = value.clone();
            blocking(move || audit_hash(&host, &value)).await
        }
        Command::Plugins { pin: true, .. } => blocking(move || pins(&host)).await,
        Command::Plugins { json, .. } => {
            let json = *json;
            blocking(move || plugins(&host, json)).await
        }
        Command::Check => check(&host, active).await,
        Command::Token { registry, scope, format } => {
            token(&host, global.platform.is_some(), registry.as_deref(), scope.as_deref(), *format).await
        }
        Command::Upload { file, name, no_verify, if_absent, json } => {
            let total = std::fs::metadata(file).ok().map(|m| m.len());
            let provider = active.take(&host).await?;
            let bar = Bar::on_terminal("upload", total, !global.quiet);
            let opts = UploadOptions {
                name: name.clone(),
                no_verify: *no_verify,
                if_absent: *if_absent,
                progress: bar.clone().map(|b| b as Arc<dyn credhost::Progress>),
            };
            let result = provider.upload_file(file, &opts).await;
            if let Some(b) = bar {
                b.finish();
            }
            let r = result?;
            if r.create_only.as_deref() == Some("best-effort") && !global.quiet {
                eprintln!("credhost: note: create-only was best-effort (racy): this store ignores preconditions, so the name was looked for first, then written");
            }
            if *json {
                print_json(&r)?;
            } else {
                println(&format!("{} {}", printable(&r.bucket), printable(&r.name)))?;
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
                print_json(&Downloaded { path: &dest.display().to_string(), result: &r })?;
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
                let signed = provider.presign(PresignMethod::Get, bucket, name, *expires).await?;
                entries.push(CredentialEntry::secret("PROJECT_URL", signed.url));
            }
            let text = zeroize::Zeroizing::new(job_env::render(&entries, *show_secrets, format)?);
            print(&text)?;
            if !global.quiet {
                note_redacted(&entries, *show_secrets);
            }
            Ok(exit::OK)
        }
        Command::Grant { request, format, show_secrets } => {
            let provider = active.take(&host).await?;
            let grant = provider.grant(request).await?;
            let mut format = format.clone();
            let expires = credhost::rfc3339(credhost::unix_seconds(grant.expires_at));
            if let job_env::Format::K8sSecret { annotations, .. } = &mut format {
                annotations.push(("credhost.io/expires-at".into(), expires.clone()));
            }
            let text = zeroize::Zeroizing::new(job_env::render(&grant.entries, *show_secrets, &format)?);
            print(&text)?;
            if !global.quiet {
                if grant.registry_scope == Some(credhost::RegistryScope::Registry) {
                    eprintln!(
                        "credhost: warning: the registry credential is not limited to the repositories asked for: it works for the whole registry (--allow-unscoped-registry)"
                    );
                }
                for part in &grant.parts {
                    eprintln!("credhost: grant {}: {} ({})", part.part, part.scope, printable(&part.detail));
                }
                eprintln!("credhost: the grant expires at {expires}");
                // A part the platform could not make last as long as asked
                // (a token server's fixed lifetime) ends the grant early.
                let end = credhost::unix_seconds(grant.expires_at);
                let asked = credhost::unix_seconds(std::time::SystemTime::now())
                    .saturating_add(i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX));
                if end < asked - 60 {
                    let first = grant
                        .parts
                        .iter()
                        .filter(|p| p.expires_at.map(credhost::unix_seconds) == Some(end))
                        .map(|p| p.part.as_str())
                        .next()
                        .unwrap_or("a part");
                    eprintln!(
                        "credhost: warning: the grant ends {} s before the --ttl asked for: its {first} credential expires first",
                        asked - end
                    );
                }
                note_redacted(&grant.entries, *show_secrets);
            }
            Ok(exit::OK)
        }
        Command::Presign { method, bucket, name, expires, if_absent, json } => {
            let provider = active.take(&host).await?;
            let signed = provider.presign_with(*method, bucket, name, *expires, *if_absent).await?;
            if *json {
                // The URL is what was asked for.
                print_json(&Revealed(&signed))?;
            } else {
                println(signed.url.expose())?;
                if !global.quiet {
                    for (name, value) in &signed.headers {
                        eprintln!(
                            "credhost: note: send the header `{}: {}` with this URL",
                            printable(name),
                            printable(value)
                        );
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
        Command::Inspect { .. } | Command::Push { .. } | Command::Install { .. } => {
            unreachable!("handled above")
        }
        Command::DockerConfig(args) => docker_config(&host, args, global.quiet).await,
        Command::KubeletProvider { require_service_account } => {
            let input = crate::credhelper::read_input(credhost::kubelet::MAX_REQUEST as u64)?;
            let opts = credhost::kubelet::RespondOptions { require_service_account: *require_service_account };
            kubelet_answer(&Registries::new(host.config().clone()).for_kubelet(), &input, opts).await
        }
        Command::KubeletConfig { name, default_cache_duration, tokens, output, force } => {
            let registries = Registries::new(host.config().clone());
            let map = registries.map().await?;
            let mut patterns: Vec<String> = map.hosts().map(|(h, _)| h.to_owned()).collect();
            patterns.extend(map.wildcard_patterns().map(str::to_owned));
            let config = std::path::absolute(&global.config)
                .map_err(|e| credhost::Error::io("cannot resolve", &global.config, e))?;
            let opts = credhost::kubelet::ConfigOptions {
                name: name.clone(),
                default_cache_duration: credhost::kubelet::go_duration(default_cache_duration.as_secs()),
                config_path: config.display().to_string(),
                tokens: tokens.clone(),
            };
            let text = credhost::kubelet::provider_config(&opts, &patterns);
            match output {
                None => print(&text)?,
                Some(path) => {
                    if !force && std::fs::symlink_metadata(path).is_ok() {
                        return Err(credhost::Error::Exists(path.clone()).into());
                    }
                    std::fs::write(path, &text).map_err(|e| credhost::Error::io("cannot write", path, e))?;
                    if !global.quiet {
                        eprintln!("credhost: wrote {}", path.display());
                    }
                }
            }
            Ok(exit::OK)
        }
    }
}

/// Runs synchronous work that reads files on a blocking thread.
async fn blocking(work: impl FnOnce() -> Result<i32> + Send + 'static) -> Result<i32> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Lib(credhost::Error::Internal(format!("the command's task failed: {e}"))))?
}

fn inspect(found: &crate::inspect::Report, file: &Path, json: bool, verbose: u8) -> Result<i32> {
    let info = found.info.as_ref();
    let panic = info.map(|i| i.panic.as_deref().unwrap_or("not recorded"));
    let verdict = match &found.refused {
        None => "would load here".to_owned(),
        Some(r) => format!("refused: {}", r.message),
    };
    if json {
        print_json(&serde_json::json!({
            "path": file.display().to_string(),
            "sha256": found.sha256,
            "name": info.map(|i| &i.name),
            "version": info.map(|i| &i.version),
            "api_version": info.map(|i| &i.api_version),
            "interface": info.map(|i| &i.interface),
            "capabilities": info.map(|i| i.capability_names()).unwrap_or_default(),
            "panic": panic,
            "description": info.and_then(|i| i.description.as_deref()),
            "status": verdict,
        }))?;
    } else {
        let mut text = format!("file:        {}\n", printable(&file.display().to_string()));
        text.push_str(&format!("sha256:      {}\n", found.sha256.as_deref().unwrap_or("-")));
        if let Some(i) = info {
            text.push_str(&format!("plugin:      {} {}\n", printable(&i.name), printable(&i.version)));
            if let Some(d) = &i.description {
                text.push_str(&format!("             {}\n", printable(d)));
            }
            text.push_str(&format!("interface:   {} (built against {})\n", i.interface, printable(&i.api_version)));
            text.push_str(&format!("offers:      {}\n", i.capability_names().join(", ")));
            text.push_str(&format!("panic:       {}\n", printable(panic.unwrap_or("-"))));
        }
        text.push_str(&format!("status:      {}\n", printable(&verdict)));
        if let (true, Some(report)) = (verbose > 0, found.refused.as_ref().and_then(|r| r.layout.as_ref())) {
            text.push_str(&format!("layout check:\n{report}\n"));
        }
        print(&text)?;
    }
    Ok(found.refused.as_ref().map_or(exit::OK, |r| r.code))
}

fn pins(host: &Host) -> Result<i32> {
    let mut text = String::new();
    let mut code = exit::OK;
    for name in host.config().instances.keys() {
        let file = host.plugin_file(name)?;
        match credhost::loader::sha256_file(&file, host.policy()) {
            Ok(sha) => text.push_str(&format!(
                "[plugins.{}]   # {}\nsha256 = \"{sha}\"\n\n",
                printable(name),
                printable(&file.display().to_string())
            )),
            Err(e) => {
                eprintln!("credhost: plugins.{}: {}", printable(name), credhost::one_line(&e.to_string()));
                code = code.max(crate::error::exit_code(e.kind()));
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
            let plugin = if r.plugin == r.name { String::new() } else { format!(" (plugin {})", printable(&r.plugin)) };
            text.push_str(&format!(
                "{active} {:<10} {:<8} api {:<6} {}{plugin}\n",
                printable(&r.name),
                printable(r.version.as_deref().unwrap_or("-")),
                printable(r.api_version.as_deref().unwrap_or("-")),
                printable(&r.status)
            ));
            if let Some(d) = &r.description {
                text.push_str(&format!("    {}\n", printable(d)));
            }
            if !r.capabilities.is_empty() {
                let offers: Vec<&str> = r.capabilities.iter().map(|op| op.name()).collect();
                text.push_str(&format!("    offers: {}\n", offers.join(", ")));
            }
            if r.isolation == "process" {
                text.push_str(
                    "    runs in: a process of its own (isolation = \"process\"; started by the first call of a running host)\n",
                );
            }
            text.push_str(&format!("    path:   {}\n", printable(r.path.as_deref().unwrap_or("-"))));
            text.push_str(&format!("    sha256: {}\n", r.sha256.as_deref().unwrap_or("-")));
        }
        print(&text)?;
    }
    // The active instance's row says whether its plugin loads.
    let refused_active =
        rows.iter().find(|r| r.name == host.platform()).is_some_and(|r| r.status.starts_with("refused"));
    Ok(if refused_active { exit::PLUGIN } else { exit::OK })
}

/// `credhost audit hash VALUE`.
fn audit_hash(host: &Host, value: &str) -> Result<i32> {
    let Some(settings) = &host.config().audit else {
        return Err(credhost::Error::Config {
            location: host.config().path.display().to_string(),
            message: "there is no [audit] table: no audit log, and no key to hash under".into(),
        }
        .into());
    };
    let value = if value == "-" {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| credhost::Error::io("cannot read", Path::new("standard input"), e))?;
        let value = zeroize::Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
        if value.is_empty() {
            return Err(Error::Usage("audit hash -: no value on standard input".into()));
        }
        value
    } else {
        zeroize::Zeroizing::new(value.to_owned())
    };
    println(&credhost::audit::hash(settings, &value)?)?;
    Ok(exit::OK)
}

async fn check(host: &Host, active: &Active) -> Result<i32> {
    let provider = active.take(host).await?;
    let report = provider.check().await?;
    let mut text = String::new();
    for item in &report.items {
        text.push_str(&format!(
            "{} {}: {}\n",
            if item.ok { "ok  " } else { "FAIL" },
            printable(&item.component),
            printable(&item.detail)
        ));
    }
    print(&text)?;
    if report.ok() {
        Ok(exit::OK)
    } else {
        eprintln!("credhost: check of platform `{}` failed", provider.name());
        Ok(exit::CHECK_FAILED)
    }
}

/// `token`: from the instance named with `--platform`, else from the
/// instance serving `--registry` (the library's routing, as every front end
/// has it), else from the active instance.
async fn token(
    host: &Host,
    named: bool,
    registry: Option<&str>,
    scope: Option<&str>,
    format: TokenFormat,
) -> Result<i32> {
    let auth = if named {
        host.active().await?.registry_auth(registry, scope).await?
    } else {
        Registries::new(host.config().clone()).auth(registry, scope, credhost::AuthForm::Any).await?
    };
    match (format, auth) {
        (TokenFormat::Docker, Some(a)) => println(a.registry_token().expose())?,
        (TokenFormat::Docker, None) => {}
        // The password is what was asked for.
        (TokenFormat::Json, Some(a)) => print_json(&Revealed(&a))?,
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
    let registries = Registries::new(host.config().clone());
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

/// Says on stderr how many secret values printed redacted, and how to see them.
fn note_redacted(entries: &[CredentialEntry], show_secrets: bool) {
    let redacted = job_env::redacted_count(entries, show_secrets);
    if redacted > 0 {
        eprintln!("credhost: {redacted} secret value(s) printed as {REDACTED}; add --show-secrets to print them");
    }
}

/// Answers a kubelet `CredentialProviderRequest` read from `input`.
pub async fn kubelet_answer(
    registries: &Registries,
    input: &[u8],
    opts: credhost::kubelet::RespondOptions,
) -> Result<i32> {
    let request = credhost::kubelet::parse_request(input)?;
    let response = credhost::kubelet::respond(registries, &request, opts).await?;
    // The credentials are what the kubelet asked for.
    print_json(&Revealed(&response))?;
    Ok(exit::OK)
}

/// Whether two paths name the same file (either may not exist yet).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `download --json`: where the file is, and the transfer.
#[derive(serde::Serialize)]
struct Downloaded<'a> {
    path: &'a str,
    #[serde(flatten)]
    result: &'a credhost::TransferResult,
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Stdout(e)
    }
}
