//! The command line as parsed: flags and arguments exactly as given. They
//! are resolved into per-command arguments in [`crate::args`].

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Registry tokens, project archives and build-job credentials for the active platform.
#[derive(Parser, Debug)]
#[command(name = "credhost", version, about, propagate_version = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "CREDHOST_CONFIG", default_value = "plugins.toml", value_name = "PATH")]
    pub config: PathBuf,
    /// Use this plugin instance instead of the configured platform (also CREDHOST_PLATFORM).
    #[arg(long, global = true, value_name = "NAME")]
    pub platform: Option<String>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Who is asking and why (e.g. "deploy 1234 by alice"), written in the
    /// lines of the audit log ([audit] in plugins.toml).
    #[arg(long, global = true, env = "CREDHOST_AUDIT_LABEL", value_name = "LABEL")]
    pub audit_label: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the configured plugin instances and whether their files load, and
    /// the other plugin files in the plugin directory (listed, never loaded).
    #[command(args_conflicts_with_subcommands = true)]
    Plugins {
        #[command(subcommand)]
        action: Option<PluginsAction>,
        /// Print a JSON array of {name, plugin, version, api_version, capabilities, path, sha256, status}.
        #[arg(long, conflicts_with = "pin")]
        json: bool,
        /// Print `sha256 = "…"` pins for the configured files, ready to paste into plugins.toml.
        #[arg(long)]
        pin: bool,
    },
    /// Load the active platform and probe its storage and registry.
    Check,
    /// The issuance audit log ([audit] in plugins.toml).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print registry credentials for build jobs.
    Token {
        /// Registry host (host[:port]); the platform's default registry when absent.
        /// Without --platform, the instance serving HOST answers.
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
        /// Store only if no object of this name exists, checked by the store
        /// atomically (exit 7 when the name is taken: nothing is stored).
        #[arg(long)]
        if_absent: bool,
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
    /// Print a time-limited URL that reads (get) or stores (put) a project
    /// without any other credentials. The URL is a credential: keep it secret.
    Presign {
        #[command(subcommand)]
        action: PresignAction,
    },
    /// Delete a project archive (deleting one that does not exist succeeds).
    Delete {
        /// Bucket.
        bucket: String,
        /// Object name.
        name: String,
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
        /// Add PROJECT_URL, a presigned URL that reads this project (BUCKET/NAME),
        /// so that the job needs no storage keys to fetch it. A secret.
        #[arg(long, value_name = "BUCKET/NAME")]
        project: Option<String>,
        /// How long PROJECT_URL works (e.g. 30m, 2h, 7d; default 1h).
        #[arg(long, value_name = "DURATION", requires = "project", value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// Print what one build job needs, and nothing more: a URL reading one
    /// project, a registry credential for one repository (and pulls), and
    /// with --with-keys storage keys that read only that project, all
    /// narrowed by the platform and expiring together. Secrets redacted
    /// unless --show-secrets.
    Grant {
        /// The project the job reads: BUCKET/NAME.
        #[arg(long, value_name = "BUCKET/NAME")]
        project: String,
        /// The repository the job pushes to (push and pull).
        #[arg(long, value_name = "REPO")]
        repository: Option<String>,
        /// A repository the job may pull from (repeatable).
        #[arg(long, value_name = "REPO")]
        pull: Vec<String>,
        /// How long the grant works: 15m to 12h (default 1h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Add storage keys limited to reading the project (for jobs using an SDK).
        #[arg(long)]
        with_keys: bool,
        /// Accept a registry-wide token where the registry cannot narrow one
        /// to the repositories (said on stderr and in CREDHOST_GRANT_REGISTRY_SCOPE).
        #[arg(long)]
        allow_unscoped_registry: bool,
        /// The session name platforms record (default: from the project name).
        #[arg(long, value_name = "NAME")]
        session_name: Option<String>,
        /// env, json, dotenv, shell, or k8s-secret (expiry in the annotation
        /// credhost.io/expires-at).
        #[arg(long, value_enum, default_value_t = CredFormat::Env)]
        format: CredFormat,
        /// Print secret values instead of a redaction marker.
        #[arg(long)]
        show_secrets: bool,
        /// k8s-secret: the Secret's name.
        #[arg(long, value_name = "N", default_value = "credhost-grant")]
        name: String,
        /// k8s-secret: the Secret's namespace (none: kubectl's current one).
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
    },
    /// Answer the kubelet's image credential provider protocol
    /// (credentialprovider.kubelet.k8s.io/v1): a CredentialProviderRequest on
    /// standard input, the credentials of the instance serving the image on
    /// standard output (run by the kubelet; see `credhost kubelet-config`).
    /// A request carrying a service-account token gets the workload's own
    /// credentials where the instance's plugin has workload identity.
    KubeletProvider {
        /// Every answer must be a workload's (the config's
        /// requireServiceAccount): a request without a service-account token,
        /// or for an instance without workload identity, is refused, never
        /// answered with the node's credentials.
        #[arg(long)]
        require_service_account: bool,
    },
    /// Write the kubelet's CredentialProviderConfig for the registries credhost
    /// serves (--image-credential-provider-config).
    KubeletConfig {
        /// The provider's name: the executable in the kubelet's
        /// --image-credential-provider-bin-dir.
        #[arg(long, default_value = "credhost")]
        name: String,
        /// How long the kubelet reuses an answer that says nothing of its own.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
        default_cache_duration: std::time::Duration,
        /// Service-account mode: the kubelet sends each pod's service-account
        /// token for this audience (tokenAttributes), and the workload's own
        /// credentials are answered (the audience the platform's trust names:
        /// `sts.amazonaws.com` for AWS, the workload identity pool provider
        /// for GCP).
        #[arg(long, value_name = "AUD")]
        service_account_audience: Option<String>,
        /// What the kubelet caches answers by: the service account
        /// (`ServiceAccount`, the default) or each token (`Token`).
        #[arg(long, value_name = "TYPE", requires = "service_account_audience", value_parser = ["Token", "ServiceAccount"])]
        cache_type: Option<String>,
        /// Only pods with a service account: never the node's credentials.
        #[arg(long, requires = "service_account_audience")]
        require_service_account: bool,
        /// A service-account annotation the kubelet must pass (a pod whose
        /// service account lacks it is not pulled); repeat for more. The
        /// credhost.io/ annotations credhost reads are passed when present.
        #[arg(long, value_name = "KEY", requires = "service_account_audience")]
        required_annotation: Vec<String>,
        /// Where to write (default: standard output).
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
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
pub enum TokenFormat {
    Docker,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredFormat {
    Env,
    Json,
    Dotenv,
    Shell,
    K8sSecret,
}

#[derive(Subcommand, Debug)]
pub enum PluginsAction {
    /// Describe a plugin file (name, version, interface version, capabilities,
    /// panic strategy) and whether it would load here. The file is vetted
    /// as for loading, then loaded: inspect only files you would load.
    Inspect {
        /// The plugin file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Push plugin files as one OCI artifact to REGISTRY/REPOSITORY:TAG
    /// (each file vetted as `inspect` does; files of several platforms make
    /// an image index). Prints the digest to pin.
    Push {
        /// The plugin files, then the reference: FILE... REGISTRY/REPOSITORY:TAG.
        #[arg(required = true, num_args = 2.., value_name = "FILE... REFERENCE")]
        args: Vec<String>,
        /// The platform of the files (OS/ARCH, default this machine's); a
        /// file is vetted by loading it, so it must be this machine's.
        #[arg(long = "platform", value_name = "OS/ARCH")]
        platforms: Vec<String>,
        /// Print {"digest", "pinned", "manifests", "files"}.
        #[arg(long)]
        json: bool,
    },
    /// Fetch this machine's plugin from REGISTRY/REPOSITORY:TAG or
    /// @sha256:DIGEST into the plugin directory, checked against every
    /// digest, vetted, and print the pins for plugins.toml.
    Install {
        /// REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST.
        reference: String,
        /// The instance the pins are for (default: the plugin's name).
        #[arg(long = "as", value_name = "INSTANCE")]
        instance: Option<String>,
        /// Where to write the file (default: the configuration's plugin_dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Which plugin, when the artifact holds several for this platform.
        #[arg(long, value_name = "NAME")]
        plugin: Option<String>,
        /// Add the pins to plugins.toml (atomically, keeping comments).
        #[arg(long)]
        write_config: bool,
        /// Print {"instance", "plugin", "version", "oci", "sha256", "file", "digest"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PresignAction {
    /// A URL that GETs BUCKET/NAME.
    Get {
        /// Bucket.
        bucket: String,
        /// Object name.
        name: String,
        /// How long the URL works (e.g. 30m, 2h, 7d; default 1h, at most 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        /// Print {"method","url","headers","expires_at"}.
        #[arg(long)]
        json: bool,
    },
    /// A URL that PUTs NAME into the projects bucket.
    Put {
        /// Object name.
        name: String,
        /// How long the URL works (e.g. 30m, 2h, 7d; default 1h, at most 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        /// The URL can only create the object, never replace it: the store's
        /// precondition is signed into it, so a replayed URL cannot overwrite.
        #[arg(long)]
        if_absent: bool,
        /// Print {"method","url","headers","expires_at"}.
        #[arg(long)]
        json: bool,
    },
}

/// `90s`, `15m`, `2h`, `7d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration such as 90s, 15m, 2h or 7d"))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit `{other}` in `{text}`: use s, m, h or d")),
    };
    n.checked_mul(unit).map(std::time::Duration::from_secs).ok_or_else(|| format!("`{text}` is too long"))
}

#[derive(Subcommand, Debug)]
pub enum AuditAction {
    /// Print VALUE as the audit log writes secrets (hmac-sha256:HEX under the
    /// log's key), to find the line that issued a leaked token.
    Hash {
        /// The secret value; `-` reads it from standard input (one line),
        /// which keeps it out of the shell's history.
        value: String,
    },
}
