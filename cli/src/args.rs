//! The command line resolved once into what each command needs: defaults
//! filled in, shorthands expanded, combinations checked. The command
//! functions in [`crate::commands`] take these and nothing else.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// How long a presigned URL works unless `--expires` says.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(3600);

use crate::{
    error::{Error, Result},
    flags::{self, CredFormat, TokenFormat},
    job_env,
};

/// Options every command shares.
pub struct Global {
    /// The configuration file.
    pub config: PathBuf,
    /// The instance to use instead of the configured one.
    pub platform: Option<String>,
    /// Only errors; no progress bars, no notes.
    pub quiet: bool,
    /// How much to tell (`-v`, repeated).
    pub verbose: u8,
    /// The caller's label in audit lines.
    pub audit_label: Option<String>,
}

/// One command, resolved.
pub enum Command {
    /// `credhost plugins`
    Plugins { json: bool, pin: bool },
    /// `credhost plugins inspect`
    Inspect { file: PathBuf, json: bool },
    /// `credhost plugins push`
    Push { files: Vec<PathBuf>, reference: String, platforms: Vec<String>, json: bool },
    /// `credhost plugins install`
    Install {
        reference: String,
        instance: Option<String>,
        dir: Option<PathBuf>,
        plugin: Option<String>,
        write_config: bool,
        json: bool,
    },
    /// `credhost presign get|put`
    Presign {
        method: credhost::PresignMethod,
        bucket: String,
        name: String,
        expires: Duration,
        if_absent: bool,
        json: bool,
    },
    /// `credhost delete`
    Delete { bucket: String, name: String },
    /// `credhost check`
    Check,
    /// `credhost audit hash`
    AuditHash { value: String },
    /// `credhost token`
    Token { registry: Option<String>, scope: Option<String>, format: TokenFormat },
    /// `credhost upload`
    Upload { file: PathBuf, name: Option<String>, no_verify: bool, if_absent: bool, json: bool },
    /// `credhost download`
    Download { bucket: String, name: String, dest: PathBuf, force: bool, json: bool },
    /// `credhost credentials`
    Credentials { format: job_env::Format, show_secrets: bool, project: Option<(String, String, Duration)> },
    /// `credhost docker-config`
    DockerConfig(DockerConfig),
    /// `credhost grant`
    Grant { request: credhost::GrantRequest, format: job_env::Format, show_secrets: bool },
    /// `credhost kubelet-provider`
    KubeletProvider { require_service_account: bool },
    /// `credhost kubelet-config`
    KubeletConfig {
        name: String,
        default_cache_duration: Duration,
        tokens: Option<credhost::kubelet::TokenAttributes>,
        output: Option<PathBuf>,
        force: bool,
    },
}

/// `credhost docker-config`, resolved.
pub struct DockerConfig {
    /// Where to write: `None` for standard output.
    pub target: Option<PathBuf>,
    /// The config.json to start from.
    pub merge: Option<PathBuf>,
    /// `auths` entries with current credentials instead of `credHelpers` entries.
    pub static_auths: bool,
    /// Only these registries (every one credhost serves when empty).
    pub registries: Vec<String>,
    /// Replace an existing target.
    pub force: bool,
}

/// Resolves the parsed command line.
pub fn resolve(cli: flags::Cli) -> Result<(Global, Command)> {
    let global = Global {
        config: cli.config,
        platform: cli.platform,
        quiet: cli.quiet,
        verbose: cli.verbose,
        audit_label: cli.audit_label,
    };
    let command = match cli.command {
        flags::Command::Plugins { action: Some(flags::PluginsAction::Inspect { file, json }), .. } => {
            Command::Inspect { file, json }
        }
        flags::Command::Plugins { action: Some(flags::PluginsAction::Push { mut args, platforms, json }), .. } => {
            let reference = args.pop().unwrap_or_default();
            if !platforms.is_empty() && platforms.len() != 1 && platforms.len() != args.len() {
                return Err(Error::Usage(format!(
                    "{} --platform for {} files: give one for all of them, or one per file",
                    platforms.len(),
                    args.len()
                )));
            }
            Command::Push { files: args.into_iter().map(PathBuf::from).collect(), reference, platforms, json }
        }
        flags::Command::Plugins {
            action: Some(flags::PluginsAction::Install { reference, instance, dir, plugin, write_config, json }),
            ..
        } => Command::Install { reference, instance, dir, plugin, write_config, json },
        flags::Command::Plugins { json, pin, .. } => Command::Plugins { json, pin },
        flags::Command::Presign { action } => match action {
            flags::PresignAction::Get { bucket, name, expires, json } => Command::Presign {
                method: credhost::PresignMethod::Get,
                bucket,
                name,
                expires: expires.unwrap_or(DEFAULT_EXPIRY),
                if_absent: false,
                json,
            },
            flags::PresignAction::Put { name, expires, if_absent, json } => Command::Presign {
                method: credhost::PresignMethod::Put,
                bucket: String::new(),
                name,
                expires: expires.unwrap_or(DEFAULT_EXPIRY),
                if_absent,
                json,
            },
        },
        flags::Command::Delete { bucket, name } => Command::Delete { bucket, name },
        flags::Command::Check => Command::Check,
        flags::Command::Audit { action: flags::AuditAction::Hash { value } } => Command::AuditHash { value },
        flags::Command::Token { registry, scope, repository, format } => {
            if registry.as_deref().is_some_and(|r| r.trim().is_empty()) {
                return Err(Error::Usage("--registry is empty: give a registry host, e.g. 127.0.0.1:5000".into()));
            }
            let scope = scope.or_else(|| repository.map(|r| format!("repository:{r}:pull,push")));
            Command::Token { registry, scope, format }
        }
        flags::Command::Upload { file, name, no_verify, if_absent, json } => {
            Command::Upload { file, name, no_verify, if_absent, json }
        }
        flags::Command::Download { bucket, name, output, force, json } => {
            let dest = match output {
                // An existing directory receives the object under its own name.
                Some(p) if p.is_dir() => p.join(object_file_name(&name)?),
                Some(p) => p,
                None => default_destination(&name)?,
            };
            Command::Download { bucket, name, dest, force, json }
        }
        flags::Command::Credentials { format, show_secrets, name, namespace, project, expires } => {
            let format = job_format(format, name, namespace)?;
            let project = match project {
                None => None,
                Some(p) => {
                    let (bucket, name) = project_arg(&p)?;
                    Some((bucket, name, expires.unwrap_or(DEFAULT_EXPIRY)))
                }
            };
            Command::Credentials { format, show_secrets, project }
        }
        flags::Command::KubeletProvider { require_service_account } => {
            Command::KubeletProvider { require_service_account }
        }
        flags::Command::KubeletConfig {
            name,
            default_cache_duration,
            service_account_audience,
            cache_type,
            require_service_account,
            required_annotation,
            output,
            force,
        } => {
            let tokens = match service_account_audience {
                None => None,
                Some(audience) => Some(credhost::kubelet::TokenAttributes::new(
                    audience,
                    cache_type.as_deref().unwrap_or("ServiceAccount"),
                    require_service_account,
                    required_annotation,
                )?),
            };
            Command::KubeletConfig { name, default_cache_duration, tokens, output, force }
        }
        flags::Command::Grant {
            project,
            repository,
            pull,
            ttl,
            with_keys,
            allow_unscoped_registry,
            session_name,
            format,
            show_secrets,
            name,
            namespace,
        } => {
            let format = job_format(format, name, namespace)?;
            let (bucket, name) = project_arg(&project)?;
            let request = credhost::GrantRequest {
                repository,
                pull,
                ttl: ttl.unwrap_or(credhost::DEFAULT_GRANT_TTL),
                with_keys,
                allow_unscoped_registry,
                session_name,
                ..credhost::GrantRequest::new(bucket, name)
            };
            Command::Grant { request, format, show_secrets }
        }
        flags::Command::DockerConfig { output, merge, static_auths, registries, force } => {
            let target = match (output, &merge) {
                (Some(o), _) if o.as_os_str() == "-" => None,
                (Some(o), _) => Some(o),
                (None, Some(m)) => Some(m.clone()),
                (None, None) => Some(PathBuf::from("config.json")),
            };
            if target.is_none() && static_auths {
                return Err(Error::Usage(
                    "--static writes credentials: give --output FILE (written with mode 0600), not standard output"
                        .into(),
                ));
            }
            Command::DockerConfig(DockerConfig { target, merge, static_auths, registries, force })
        }
    };
    Ok((global, command))
}

/// The output form of a job's entries, its own options checked before any
/// plugin is asked.
fn job_format(format: CredFormat, name: String, namespace: Option<String>) -> Result<job_env::Format> {
    let format = match format {
        CredFormat::Env => job_env::Format::Env,
        CredFormat::Json => job_env::Format::Json,
        CredFormat::Dotenv => job_env::Format::Dotenv,
        CredFormat::Shell => job_env::Format::Shell,
        CredFormat::K8sSecret => job_env::Format::K8sSecret { name, namespace, annotations: Vec::new() },
    };
    job_env::check_format(&format)?;
    Ok(format)
}

/// `--project BUCKET/NAME`.
fn project_arg(p: &str) -> Result<(String, String)> {
    match p.split_once('/') {
        Some((bucket, name)) if !bucket.is_empty() && !name.is_empty() => Ok((bucket.to_owned(), name.to_owned())),
        _ => Err(Error::Usage(format!("--project {p:?}: give BUCKET/NAME, e.g. projects/1234.zip"))),
    }
}

/// `NAME`'s last path segment (`1234.zip` for `dir/1234.zip`), relative to
/// the current directory.
fn default_destination(name: &str) -> Result<PathBuf> {
    Ok(Path::new(".").join(object_file_name(name)?))
}

/// `NAME`'s last path segment, once `NAME` is known to be a valid name.
fn object_file_name(name: &str) -> Result<&str> {
    credhost::names::validate_name(name)?;
    Ok(name.rsplit('/').next().unwrap_or(name))
}
