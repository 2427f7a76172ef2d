//! The `credhost` command line.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use clap::{Parser, Subcommand, ValueEnum};
use credhost_plugin_api::REDACTED;

use crate::{exit, progress, Error, Host, Result};

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
        /// env: KEY=value lines; json: one object.
        #[arg(long, value_enum, default_value_t = CredFormat::Env)]
        format: CredFormat,
        /// Print secret values instead of a redaction marker.
        #[arg(long)]
        show_secrets: bool,
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
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

fn init_logging(verbose: u8, quiet: bool) {
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
        Command::Credentials { format, show_secrets } => {
            let provider = active_provider(&host, slot).await?;
            let entries = provider.credentials().await?;
            let value = |e: &credhost_plugin_api::CredentialEntry| {
                if e.secret && !show_secrets { REDACTED.to_owned() } else { e.value.expose().to_owned() }
            };
            match format {
                CredFormat::Env => {
                    let mut out = std::io::stdout().lock();
                    for e in &entries {
                        let _ = writeln!(out, "{}={}", e.key, value(e));
                    }
                }
                CredFormat::Json => {
                    let map: serde_json::Map<String, serde_json::Value> =
                        entries.iter().map(|e| (e.key.to_string(), serde_json::Value::String(value(e)))).collect();
                    print_json(&map);
                }
            }
            Ok(exit::OK)
        }
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

/// `./NAME`, using the last path segment of a name such as `dir/1234.zip`.
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

#[allow(dead_code)]
fn _unused(_: Error) {}
