//! The `credhost` command line.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use clap::{Parser, Subcommand, ValueEnum};
use credhost_plugin_api::REDACTED;

use crate::{docker_config, exit, job_env, progress, Error, Host, Result};

/// Registry tokens, project archives and build-job credentials for the active platform.
#[derive(Parser, Debug)]
#[command(name = "credhost", version, about, propagate_version = true)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "CREDHOST_CONFIG", default_value = "plugins.toml", value_name = "PATH")]
    config: PathBuf,
    /// Use this platform instead of the configured one (also CREDHOST_PLATFORM).
    #[arg(long, global = true, value_name = "NAME")]
    platform: Option<String>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Only errors; no progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the configured plugins and plugin files, and whether they load.
    Plugins {
        /// Print a JSON array of {name, version, api_version, path, sha256, status}.
        #[arg(long)]
        json: bool,
    },
    /// Load the active platform and probe its storage and registry.
    Check,
    /// Print registry credentials for build jobs.
    Token {
        /// Registry host (host[:port]); the platform's default registry when absent.
        #[arg(long, value_name = "HOST")]
        registry: Option<String>,
        /// Token scope for registries with token auth, e.g. repository:demo:pull,push.
        #[arg(long, conflicts_with = "repository")]
        scope: Option<String>,
        /// Shorthand for --scope repository:NAME:pull,push.
        #[arg(long, value_name = "NAME")]
        repository: Option<String>,
        /// docker: the REGISTRY_TOKEN string (base64 of user:secret), nothing when
        /// none is needed; json: {"server","username","password","expires_at"} or null.
        #[arg(long, value_enum, default_value_t = TokenFormat::Docker)]
        format: TokenFormat,
    },
    /// Upload a project archive to the platform's projects bucket.
    Upload {
        /// The ZIP file.
        file: PathBuf,
        /// Object name (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// Upload even if the file is not a ZIP archive.
        #[arg(long)]
        no_verify: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a project archive.
    Download {
        /// Bucket to read from.
        bucket: String,
        /// Object name.
        name: String,
        /// Destination file (default: ./NAME's file name).
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace the destination if it exists.
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the credentials a build job needs.
    Credentials {
        /// env: KEY=value lines; json: one object; dotenv: a .env file (quoted
        /// where needed); shell: `export KEY='value'` lines for eval; k8s-secret:
        /// a Kubernetes Secret manifest (stringData).
        #[arg(long, value_enum, default_value_t = CredFormat::Env)]
        format: CredFormat,
        /// Print secret values instead of a redaction marker.
        #[arg(long)]
        show_secrets: bool,
        /// k8s-secret: the Secret's name.
        #[arg(long, value_name = "NAME", default_value = "credhost-credentials")]
        name: String,
        /// k8s-secret: the Secret's namespace (none: kubectl's current one).
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
    },
    /// Write a docker config.json whose credHelpers send the registries credhost
    /// serves to docker-credential-credhost (or, with --static, holding their
    /// current credentials).
    DockerConfig {
        /// Where to write (default: ./config.json, or the --merge file); `-` is
        /// standard output (not with --static).
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Start from this config.json, keeping its other entries.
        #[arg(long, value_name = "FILE")]
        merge: Option<PathBuf>,
        /// Write `auths` entries holding the current credentials, for builders
        /// that cannot run credential helpers (the file gets mode 0600).
        #[arg(long = "static")]
        static_auths: bool,
        /// Only this registry (repeatable); default: every registry credhost serves.
        #[arg(long = "registry", value_name = "HOST")]
        registries: Vec<String>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TokenFormat {
    Docker,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CredFormat {
    Env,
    Json,
    Dotenv,
    Shell,
    K8sSecret,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credhost: cannot start the async runtime: {e}");
            return exit::OTHER;
        }
    };
    let active = ActiveProvider::default();
    let code = runtime.block_on(async {
        tokio::select! {
            r = run(&cli, &active) => match r {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("credhost: {}", one_line(&e.to_string()));
                    e.exit_code()
                }
            },
            _ = tokio::signal::ctrl_c() => {
                // The operation's future is dropped here, which cancels it in
                // the plugin; give the plugin a moment to clean up (abort a
                // multipart upload) before the process exits.
                eprintln!("credhost: interrupted");
                let provider = active.lock().ok().and_then(|p| p.clone());
                if let Some(p) = provider {
                    p.wait_idle(std::time::Duration::from_secs(10)).await;
                }
                exit::INTERRUPTED
            }
        }
    });
    // Plugin tasks may still be winding down on their own runtimes; the
    // process exits regardless.
    runtime.shutdown_background();
    code
}

/// Errors print as one line: causes that span lines (an SDK's list of the
/// credential sources it tried) are joined with `; `.
pub(crate) fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

pub(crate) fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("CREDHOST_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(verbose > 1)
        .try_init();
}

/// The provider in use, for clean-up after an interruption.
type ActiveProvider = std::sync::Mutex<Option<crate::ProviderHandle>>;

async fn active_provider(host: &Host, slot: &ActiveProvider) -> Result<crate::ProviderHandle> {
    let p = host.active().await?;
    if let Ok(mut s) = slot.lock() {
        *s = Some(p.clone());
    }
    Ok(p)
}

async fn run(cli: &Cli, slot: &ActiveProvider) -> Result<i32> {
    let host = Host::from_file(&cli.config, cli.platform.as_deref())?;
    let show_progress = !cli.quiet;
    match &cli.command {
        Command::Plugins { json } => {
            let rows = tokio::task::block_in_place(|| host.plugin_report());
            if *json {
                print_json(&rows);
            } else {
                for r in &rows {
                    let active = if r.name == host.platform() { "*" } else { " " };
                    println!(
                        "{active} {:<10} {:<8} api {:<6} {}",
                        r.name,
                        r.version.as_deref().unwrap_or("-"),
                        r.api_version.as_deref().unwrap_or("-"),
                        r.status
                    );
                    println!("    path:   {}", r.path.as_deref().unwrap_or("-"));
                    println!("    sha256: {}", r.sha256.as_deref().unwrap_or("-"));
                }
            }
            // The first row of a name is its configured entry.
            let refused_active =
                rows.iter().find(|r| r.name == host.platform()).is_some_and(|r| r.status.starts_with("refused"));
            Ok(if refused_active { exit::PLUGIN } else { exit::OK })
        }
        Command::Check => {
            let provider = active_provider(&host, slot).await?;
            let report = provider.check().await?;
            for item in report.items.iter() {
                println!("{} {}: {}", if item.ok { "ok  " } else { "FAIL" }, item.component, item.detail);
            }
            if report.ok() {
                Ok(exit::OK)
            } else {
                eprintln!("credhost: check of platform `{}` failed", provider.name());
                Ok(exit::CHECK_FAILED)
            }
        }
        Command::Token { registry, scope, repository, format } => {
            let scope = match (scope, repository) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(r)) => Some(format!("repository:{r}:pull,push")),
                _ => None,
            };
            let provider = active_provider(&host, slot).await?;
            let auth = provider.registry_auth(registry.as_deref(), scope.as_deref()).await?;
            match (format, auth) {
                (TokenFormat::Docker, Some(a)) => println!("{}", a.registry_token().expose()),
                (TokenFormat::Docker, None) => {}
                (TokenFormat::Json, Some(a)) => print_json(&serde_json::json!({
                    "server": a.server.as_str(),
                    "username": a.username.as_str(),
                    "password": a.secret.expose(),
                    "expires_at": a.expires_at.into_option(),
                })),
                (TokenFormat::Json, None) => println!("null"),
            }
            Ok(exit::OK)
        }
        Command::Upload { file, name, no_verify, json } => {
            let total = std::fs::metadata(file).ok().map(|m| m.len());
            let provider = active_provider(&host, slot).await?;
            let bar = progress::terminal_bar("upload", total, show_progress);
            let (bar, object) = split(bar);
            let result = provider.upload_file_with(file, name.as_deref(), *no_verify, object).await;
            finish(bar);
            let r = result?;
            if *json {
                print_json(&transfer_json(&r));
            } else {
                println!("{} {}", r.bucket, r.name);
            }
            Ok(exit::OK)
        }
        Command::Download { bucket, name, output, force, json } => {
            let dest = match output {
                // An existing directory receives the object under its own name.
                Some(p) if p.is_dir() => p.join(default_destination(name)?),
                Some(p) => p.clone(),
                None => default_destination(name)?,
            };
            let provider = active_provider(&host, slot).await?;
            let bar = progress::terminal_bar("download", None, show_progress);
            let (bar, object) = split(bar);
            let result = provider.download_to_path(bucket, name, &dest, *force, object).await;
            finish(bar);
            let r = result?;
            if *json {
                let mut v = transfer_json(&r);
                v["path"] = serde_json::Value::String(dest.display().to_string());
                print_json(&v);
            } else {
                println!("{}", dest.display());
            }
            Ok(exit::OK)
        }
        Command::Credentials { format, show_secrets, name, namespace } => {
            let format = match format {
                CredFormat::Env => job_env::Format::Env,
                CredFormat::Json => job_env::Format::Json,
                CredFormat::Dotenv => job_env::Format::Dotenv,
                CredFormat::Shell => job_env::Format::Shell,
                CredFormat::K8sSecret => job_env::Format::K8sSecret { name: name.clone(), namespace: namespace.clone() },
            };
            // Flags are checked before the plugin is asked for anything.
            job_env::render(&[], false, &format)?;
            let provider = active_provider(&host, slot).await?;
            let entries = provider.credentials().await?;
            let text = zeroize::Zeroizing::new(job_env::render(&entries, *show_secrets, &format)?);
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            let redacted = job_env::redacted_count(&entries, *show_secrets);
            if redacted > 0 && !cli.quiet {
                eprintln!("credhost: {redacted} secret value(s) printed as {REDACTED}; add --show-secrets to print them");
            }
            Ok(exit::OK)
        }
        Command::DockerConfig { output, merge, static_auths, registries, force } => {
            let target = match (output, merge) {
                (Some(o), _) => o.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => PathBuf::from("config.json"),
            };
            let to_stdout = target.as_os_str() == "-";
            if to_stdout && *static_auths {
                return Err(Error::InvalidInput(
                    "--static writes credentials: give --output FILE (written with mode 0600), not standard output".into(),
                ));
            }
            // Replacing the file being merged is the point of --merge; anything else needs --force.
            let replaces_merged = merge.as_ref().is_some_and(|m| same_file(m, &target));
            if !to_stdout && !force && !replaces_merged && std::fs::symlink_metadata(&target).is_ok() {
                return Err(Error::Exists(target));
            }
            let base = match merge {
                Some(m) => docker_config::read(m)?,
                None => serde_json::Map::new(),
            };
            let helper = crate::credhelper::CredentialHelper::new(host.config().clone())?;
            let opts = docker_config::Options { static_auths: *static_auths, registries, quiet: cli.quiet };
            let doc = zeroize::Zeroizing::new(docker_config::build(&helper, base, &opts).await?);
            if to_stdout {
                let _ = std::io::stdout().lock().write_all(doc.as_bytes());
            } else {
                docker_config::write_private(&target, doc.as_bytes())?;
                if !cli.quiet {
                    eprintln!("credhost: wrote {}", target.display());
                }
            }
            if !static_auths && !cli.quiet {
                docker_config::note_helper_config(host.config());
            }
            Ok(exit::OK)
        }
    }
}

/// Whether two paths name the same file (either may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

type Bar = Option<(indicatif::ProgressBar, credhost_plugin_api::ProgressBox)>;

fn split(bar: Bar) -> (Option<indicatif::ProgressBar>, Option<credhost_plugin_api::ProgressBox>) {
    match bar {
        Some((b, o)) => (Some(b), Some(o)),
        None => (None, None),
    }
}

fn finish(bar: Option<indicatif::ProgressBar>) {
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// `NAME`'s last path segment (`1234.zip` for `dir/1234.zip`), relative to
/// the current directory.
fn default_destination(name: &str) -> Result<PathBuf> {
    crate::names::validate_name(name)?;
    let file = name.rsplit('/').next().unwrap_or(name);
    Ok(Path::new(".").join(file))
}

fn transfer_json(r: &credhost_plugin_api::TransferResult) -> serde_json::Value {
    serde_json::json!({
        "bucket": r.bucket.as_str(),
        "name": r.name.as_str(),
        "size": r.size,
        "checksum": r.checksum.as_str(),
    })
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("credhost: cannot format JSON: {e}"),
    }
}

