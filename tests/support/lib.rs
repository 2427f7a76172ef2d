//! Support for the end-to-end tests: the built binary and plugins, the real
//! services started by `tests/services/up.sh`, temporary directories with
//! configuration files, and generated ZIP archives.
//!
//! A missing binary or service is a test failure with a message saying what
//! to run, never a skip.

pub mod backend;
pub mod gcp;

use std::{
    collections::HashMap,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The ECR registry host moto answers for (account 123456789012, us-east-1).
pub const AWS_REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// Where `cargo build --release` put the binary and plugins.
pub fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let target = if target.is_absolute() { target } else { repo_root().join(target) };
    target.join("release")
}

/// A built artifact in the release directory; fails the test when missing.
pub fn artifact(file: &str) -> PathBuf {
    let p = release_dir().join(file);
    assert!(p.exists(), "{} is missing: run `cargo build --release --workspace` first (tests/run does)", p.display());
    p
}

/// `libNAME.so` (or the platform's equivalent).
pub fn lib_file(name: &str) -> String {
    format!("{}{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// The symbols a shared library exports (defined ones only), by binutils' `nm`.
pub fn exported_symbols(lib: &Path) -> Vec<String> {
    let out = Command::new("nm")
        .args(["--dynamic", "--defined-only", "--format=just-symbols"])
        .arg(lib)
        .output()
        .expect("nm (binutils) runs");
    assert!(out.status.success(), "nm {}: {}", lib.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// The one symbol a plugin file exports: its abi_stable root module.
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// The real services, from the env file written by `tests/services/up.sh`.
pub struct Services(HashMap<String, String>);

impl Services {
    /// Reads the services' env file; fails the test when services are not running.
    pub fn get() -> Self {
        let dir = std::env::var_os("CREDHOST_TEST_SERVICES_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("tests/services/.run"));
        Self::at(&dir)
    }

    /// The services whose env file `tests/services/up.sh DIR` wrote in `dir`.
    pub fn at(dir: &Path) -> Self {
        let file = dir.join("env");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "services are not running ({}: {e}): start them with tests/services/up.sh, or run tests/run",
                file.display()
            )
        });
        let vars = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches(['"', '\'']).to_owned()))
            .collect();
        Self(vars)
    }

    /// One variable, e.g. `CREDHOST_TEST_S3_ENDPOINT`.
    pub fn var(&self, name: &str) -> String {
        self.0.get(name).cloned().unwrap_or_else(|| panic!("{name} missing from the services env file"))
    }

    /// All variables, to pass to child processes.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.0
    }
}

/// A temporary working directory holding a `plugins.toml`.
pub struct Workspace {
    /// The directory (deleted on drop).
    pub dir: tempfile::TempDir,
    env: Vec<(String, Option<String>)>,
}

impl Workspace {
    /// An empty directory under the target directory (same filesystem as the build).
    pub fn new() -> Self {
        let base = release_dir().join("e2e-tmp");
        std::fs::create_dir_all(&base).expect("create e2e-tmp");
        let dir = tempfile::Builder::new().prefix("ws-").tempdir_in(&base).expect("tempdir");
        Self { dir, env: Vec::new() }
    }

    /// A directory with a `plugins.toml` whose plugin directory is the release
    /// directory and whose `[plugins.local.settings]` is `settings` (TOML text).
    pub fn local(settings: &str) -> Self {
        let ws = Self::new();
        ws.write_config(&format!(
            "platform = \"local\"\nplugin_dir = {:?}\n\n[plugins.local.settings]\n{settings}\n",
            release_dir().display().to_string()
        ));
        ws
    }

    /// Local plugin with fs storage and an open registry on `registry`.
    pub fn local_fs(registry: &str) -> Self {
        Self::local(&format!(
            "registry = {{ url = \"http://{registry}\", auth = \"none\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}"
        ))
    }

    /// Local plugin with fs storage and the htpasswd registry of the test
    /// services, its user and password in `REG_USER` / `REG_PASS`.
    pub fn local_basic(svc: &Services) -> Self {
        let mut ws = Self::local(&format!(
            "registry = {{ url = \"http://{}\", auth = \"basic\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}",
            svc.var("CREDHOST_TEST_REGISTRY_BASIC")
        ));
        ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
        ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
        ws
    }

    /// Local plugin with fs storage and the token-auth registry of the test
    /// services, its user and password in `REG_USER` / `REG_PASS`.
    pub fn local_token(svc: &Services) -> Self {
        let mut ws = Self::local(&format!(
            "registry = {{ url = \"http://{}\", auth = \"token\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}",
            svc.var("CREDHOST_TEST_REGISTRY_TOKEN")
        ));
        ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
        ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
        ws
    }

    /// Local plugin with SeaweedFS storage (keys from the env vars the settings name).
    pub fn local_s3(svc: &Services, registry_settings: &str) -> Self {
        Self::local_s3_at(svc, registry_settings, &svc.var("CREDHOST_TEST_S3_ENDPOINT"))
    }

    /// Local plugin with the S3 store at `endpoint`, which takes the test
    /// services' keys (SeaweedFS, rclone).
    pub fn local_s3_at(svc: &Services, registry_settings: &str, endpoint: &str) -> Self {
        let mut ws = Self::local(&format!(
            "registry = {registry_settings}\nstorage = {{ kind = \"s3\", endpoint = \"{endpoint}\", region = \"{}\", bucket = \"{}\", access_key_id_env = \"TEST_S3_KEY\", secret_access_key_env = \"TEST_S3_SECRET\", part_size_mib = 8 }}",
            svc.var("CREDHOST_TEST_S3_REGION"),
            svc.var("CREDHOST_TEST_S3_BUCKET"),
        ));
        ws.set_env("TEST_S3_KEY", &svc.var("CREDHOST_TEST_S3_ACCESS_KEY"));
        ws.set_env("TEST_S3_SECRET", &svc.var("CREDHOST_TEST_S3_SECRET_KEY"));
        ws
    }

    /// The aws plugin active, ECR on moto, S3 at `s3_endpoint` with the
    /// SeaweedFS keys in the standard AWS environment variables, and the
    /// machine's own AWS configuration (files, profiles, instance metadata)
    /// shut out. `extra` is appended to the settings table.
    pub fn aws(svc: &Services, s3_endpoint: &str, extra: &str) -> Self {
        let mut ws = Self::new();
        ws.write_config(&format!(
            "platform = \"aws\"\nplugin_dir = {:?}\n\n[plugins.aws.settings]\nregion = \"us-east-1\"\nregistry = \"{AWS_REGISTRY}\"\nbucket = \"projects\"\necr_endpoint_url = \"{}\"\ns3_endpoint_url = \"{s3_endpoint}\"\nforce_path_style = true\npart_size_mib = 8\n{extra}\n",
            release_dir().display().to_string(),
            svc.var("CREDHOST_TEST_MOTO_ENDPOINT"),
        ));
        let empty = ws.path("empty-aws-file");
        std::fs::write(&empty, "").expect("write empty AWS config");
        let empty = empty.display().to_string();
        ws.set_env("AWS_CONFIG_FILE", &empty);
        ws.set_env("AWS_SHARED_CREDENTIALS_FILE", &empty);
        ws.set_env("AWS_EC2_METADATA_DISABLED", "true");
        ws.set_env("AWS_ACCESS_KEY_ID", &svc.var("CREDHOST_TEST_S3_ACCESS_KEY"));
        ws.set_env("AWS_SECRET_ACCESS_KEY", &svc.var("CREDHOST_TEST_S3_SECRET_KEY"));
        ws
    }

    /// Writes `plugins.toml`.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path("plugins.toml"), text).expect("write plugins.toml");
    }

    /// Sets `isolation` (`"process"`, `"in-process"`) for the instance of
    /// the `platform` key (configured by a `[plugins.NAME.settings]` table).
    pub fn set_isolation(&self, isolation: &str) {
        let text = std::fs::read_to_string(self.path("plugins.toml")).expect("plugins.toml");
        let config: toml::Table = text.parse().expect("plugins.toml parses");
        let name = config["platform"].as_str().expect("platform").to_owned();
        let setting = format!("isolation = \"{isolation}\"\n");
        let table = format!("[plugins.{name}]\n");
        let text = if text.contains(&table) {
            text.replacen(&table, &format!("{table}{setting}"), 1)
        } else {
            let settings = format!("[plugins.{name}.settings]\n");
            assert!(text.contains(&settings), "no [plugins.{name}.settings] in {text}");
            text.replacen(&settings, &format!("{table}{setting}\n{settings}"), 1)
        };
        self.write_config(&text);
    }

    /// A path inside the directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Sets an environment variable for commands run from here.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.push((k.to_owned(), Some(v.to_owned())));
    }

    /// Removes an environment variable for commands run from here.
    pub fn unset_env(&mut self, k: &str) {
        self.env.push((k.to_owned(), None));
    }

    /// Sets this workspace's environment variables in the current process, for
    /// in-process tests of the library (the values tests use are the same
    /// across tests, so concurrent tests do not disturb each other).
    pub fn apply_env(&self) {
        for (k, v) in &self.env {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }

    /// A `credhost` command running in this directory with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.program(artifact("credhost"), args)
    }

    /// Any program (another built binary, skopeo, a shell) running in this
    /// directory with the same environment as [`Workspace::cmd`].
    pub fn program(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.path()).args(args).stdin(Stdio::null());
        for k in [
            "CREDHOST_PLATFORM",
            "CREDHOST_CONFIG",
            "CREDHOST_LOG",
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
        ] {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// Runs `credhost ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run(self.cmd(args).output().expect("spawn credhost"))
    }

    /// Runs `docker-credential-credhost ARGS` with `stdin` to completion.
    pub fn helper(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = self
            .program(artifact("docker-credential-credhost"), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker-credential-credhost");
        // The helper may answer without reading (usage errors): a broken pipe is fine.
        let _ = std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), stdin);
        Run(child.wait_with_output().expect("wait for docker-credential-credhost"))
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// A finished command.
pub struct Run(pub Output);

impl Run {
    /// Exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(self.code(), 0, "credhost failed\nstdout: {}\nstderr: {}", self.stdout(), self.stderr());
        self.stdout()
    }
    /// Asserts exit code `code` and returns stderr.
    #[track_caller]
    pub fn fails_with(&self, code: i32) -> String {
        assert_eq!(self.code(), code, "unexpected exit code\nstdout: {}\nstderr: {}", self.stdout(), self.stderr());
        self.stderr()
    }
}

/// The entries `credhost credentials` gives a build job with `store` (`fs`,
/// `local_s3`, `gcp`), from `tests/job-env-keys.json`, which the Python
/// tests read too.
pub fn job_env_keys(store: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("tests/job-env-keys.json")).expect("read job-env-keys.json");
    let keys: serde_json::Value = serde_json::from_str(&text).expect("job-env-keys.json is JSON");
    serde_json::from_value(keys[store].clone()).unwrap_or_else(|_| panic!("no key list for {store}"))
}

/// Writes a valid ZIP archive of about `size` bytes holding one stored
/// (uncompressed) file of pseudo-random bytes derived from `seed`.
pub fn write_zip(path: &Path, size: u64, seed: u64) {
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create zip"));
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(size >= u32::MAX as u64);
    zip.start_file("payload.bin", opts).expect("start zip entry");
    // Headers, descriptor and central directory take about 120 bytes.
    let mut left = size.saturating_sub(120).max(1);
    let mut rng = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        for word in chunk[..n].chunks_mut(8) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            word.copy_from_slice(&rng.to_le_bytes()[..word.len()]);
        }
        zip.write_all(&chunk[..n]).expect("write zip");
        left -= n as u64;
    }
    zip.finish().expect("finish zip").flush().expect("flush zip");
}

/// Standard base64 (with padding) of `s`, as registry tokens and docker
/// `auths` entries encode `user:password`.
pub fn base64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(s.len().div_ceil(3) * 4);
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// sha256 of a file, hex.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Runs a Python snippet with the services' environment plus `overrides`; returns stdout.
#[track_caller]
pub fn python_with(svc: &Services, overrides: &[(String, String)], script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .envs(svc.vars())
        .envs(overrides.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("spawn python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a Python snippet with the services' environment; returns stdout.
#[track_caller]
pub fn python(svc: &Services, script: &str, args: &[&str]) -> String {
    python_with(svc, &[], script, args)
}

/// Python prelude: a boto3 S3 client for SeaweedFS from the services env.
pub const BOTO3_CLIENT: &str = r#"
import os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["CREDHOST_TEST_S3_ENDPOINT"],
    aws_access_key_id=os.environ["CREDHOST_TEST_S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["CREDHOST_TEST_S3_SECRET_KEY"],
    region_name=os.environ["CREDHOST_TEST_S3_REGION"],
    config=Config(s3={"addressing_style": "path"}))
bucket = os.environ["CREDHOST_TEST_S3_BUCKET"]
"#;

/// A unique object name for a test, so concurrent tests never collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos}-{}.zip", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Captures the messages of every `tracing` event in this process (host and
/// plugin logs alike) at debug level and above; returns the shared buffer.
pub fn capture_logs() -> &'static std::sync::Mutex<Vec<String>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    static LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    static INSTALLED: std::sync::Once = std::sync::Once::new();

    struct Capture;
    struct Text(String);
    impl tracing::field::Visit for Text {
        fn record_debug(&mut self, _field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value:?} ");
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut text = Text(String::new());
            event.record(&mut text);
            LINES.lock().unwrap_or_else(|p| p.into_inner()).push(text.0);
        }
    }
    INSTALLED.call_once(|| {
        let subscriber =
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::DEBUG).with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in the test binary");
    });
    &LINES
}

/// The OCI image layout (one small image, tag `v1`) in `ws`, written by
/// `tests/services/make_oci.py` on first use; returns its directory.
pub fn oci_layout(ws: &Workspace) -> PathBuf {
    let layout = ws.path("oci");
    if !layout.exists() {
        let out = Command::new("python3")
            .arg(repo_root().join("tests/services/make_oci.py"))
            .arg(&layout)
            .arg("v1")
            .output()
            .expect("spawn python3 make_oci.py");
        assert!(out.status.success(), "make_oci.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    layout
}

/// A child process (a test's server) killed when dropped.
pub struct Server(pub std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local address").port()
}

/// `curl -sS ARGS` with the HTTP status on a last line of its own; returns (body, status).
pub fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-sS", "-w", "\n%{http_code}"]).args(args).output().expect("spawn curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_owned(), code.to_owned())
}

/// Writes an OCI image layout and pushes it with skopeo to
/// `registry`/`repo`:v1 with `auth` (skopeo's credential flags); returns
/// skopeo's output.
pub fn skopeo_push(ws: &Workspace, registry: &str, repo: &str, auth: &[&str]) -> std::process::Output {
    let layout = oci_layout(ws);
    Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .args(auth)
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{registry}/{repo}:v1"))
        .output()
        .expect("skopeo")
}

/// The state export (`/moto-api/data.json`) of the test services' STS-only
/// moto, where grants' sessions are recorded (the other moto answers 500
/// there while any multipart upload is open); asked again on a 500.
pub fn moto_state(svc: &Services) -> serde_json::Value {
    let moto = svc.var("CREDHOST_TEST_MOTO_STS_ENDPOINT");
    for _ in 0..50 {
        let (body, code) = curl(&[&format!("{moto}/moto-api/data.json")]);
        if code == "200" {
            return serde_json::from_str(&body).expect("moto's state is JSON");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("moto's state export never answered");
}

/// A token of the test services' OIDC issuer, shaped like a Kubernetes
/// projected service-account token (`svc_helper.py oidc-token ARGS`: the
/// issuer's key, kid, iss and audience unless `args` say otherwise).
pub fn oidc_token(svc: &Services, args: &[&str]) -> String {
    let out = Command::new(svc.var("CREDHOST_TEST_PYTHON"))
        .arg(svc.var("CREDHOST_TEST_SVC_HELPER"))
        .arg("oidc-token")
        .args(args)
        .envs(svc.vars())
        .stdin(Stdio::null())
        .output()
        .expect("spawn svc_helper.py oidc-token");
    assert!(out.status.success(), "oidc-token failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("a token is text").trim().to_owned()
}

/// Runs the command `command(run)` makes `runs` times, each timed from
/// spawn to exit, and prints `what`'s median and slowest (`width`: the
/// column `what` is padded to). False, after saying why, when a run fails.
pub fn time_runs(what: &str, width: usize, runs: usize, mut command: impl FnMut(usize) -> Command) -> bool {
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        let mut cmd = command(run);
        let t = std::time::Instant::now();
        let out = cmd.output().expect("spawn the command");
        times.push(t.elapsed());
        if !out.status.success() {
            eprintln!("{what}: exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr).trim_end());
            return false;
        }
    }
    times.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {what:<width$} median {:7.1} ms   slowest {:7.1} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    true
}
