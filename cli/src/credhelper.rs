//! `docker-credential-credhost`: the docker credential-helper protocol over
//! the configured plugins.
//!
//! Docker, skopeo, buildah and other registry clients run
//! `docker-credential-<NAME> <action>` for the registries a `credHelpers`
//! entry of their config.json sends to `<NAME>`. Actions: `get` (server URL on
//! stdin, `{"ServerURL","Username","Secret"}` on stdout), `list` (a JSON object
//! of server URL to user name), `version`, and `store`/`erase`, which this
//! helper refuses: credentials come from the platform, not from
//! `docker login`. Failures are one line on stdout and exit status 1, as the
//! protocol wants; "credentials not found in native keychain" is the answer
//! clients read as "no credentials, go on anonymously".

use crate::error::{Error, Result};

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use credhost::Registries;
use zeroize::Zeroizing;

/// The helper's name in a `credHelpers` entry (the program is `docker-credential-credhost`).
pub const HELPER_NAME: &str = "credhost";
/// The protocol's "no credentials for this server" answer.
pub const NOT_FOUND: &str = "credentials not found in native keychain";

const USAGE: &str = "usage: docker-credential-credhost <get|list|version|store|erase>";
/// Longer input is not a server URL.
const MAX_STDIN: u64 = 64 * 1024;

/// The configuration the helper reads: `$CREDHOST_CONFIG`, else
/// `$XDG_CONFIG_HOME/credhost/plugins.toml` (`~/.config/credhost/plugins.toml`;
/// `%APPDATA%\credhost\plugins.toml` on Windows). Never the current
/// directory: registry clients run helpers wherever the user happens to be,
/// and a `plugins.toml` there would choose which plugin code gets loaded.
pub fn config_path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var(credhost::config::CONFIG_ENV) {
        return Some(p);
    }
    let base = if cfg!(windows) {
        var("APPDATA")?
    } else {
        var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?
    };
    Some(base.join("credhost").join("plugins.toml"))
}

/// The caller label of the helper's audit lines (the CLI's `--audit-label`).
const AUDIT_LABEL_ENV: &str = "CREDHOST_AUDIT_LABEL";

/// Runs the helper and returns the process exit code.
pub fn main() -> i32 {
    crate::logging::init(0, false);
    credhost::audit::set_process_label(std::env::var(AUDIT_LABEL_ENV).ok().as_deref());
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    // A kubelet pointed at this program (as its image credential provider)
    // sends a CredentialProviderRequest, with whatever arguments its
    // config lists: that gets the kubelet's answer.
    if args.is_empty() || args == ["get"] {
        let input = match read_stdin() {
            Ok(input) => input,
            Err(e) => return fail(&e.message()),
        };
        if is_kubelet_request(&input) {
            return kubelet(&input);
        }
        return match args.is_empty() {
            true => fail(USAGE),
            false => match run("get", input) {
                Ok(code) => code,
                Err(e) => fail(&e.message()),
            },
        };
    }
    let [action] = args.as_slice() else {
        return fail(USAGE);
    };
    match action.as_str() {
        "version" | "--version" | "-v" => {
            let version = format!("docker-credential-credhost (credhost) {}", env!("CARGO_PKG_VERSION"));
            i32::from(crate::output::println(&version).is_err())
        }
        "--help" | "-h" => i32::from(crate::output::println(USAGE).is_err()),
        "store" => {
            // Read what the client sends, so that it never sees a broken pipe
            // instead of the answer.
            let _ = read_stdin();
            fail("credhost does not store registry credentials: they come from the platform's plugin (plugins.toml), so `docker login` is not needed for the registries it serves")
        }
        "erase" => {
            let _ = read_stdin();
            fail("credhost does not store registry credentials, so there is nothing to erase: they come from the platform's plugin (plugins.toml)")
        }
        "list" => match run(action, Zeroizing::new(Vec::new())) {
            Ok(code) => code,
            Err(e) => fail(&e.message()),
        },
        other => fail(&format!("unknown action `{other}`; {USAGE}")),
    }
}

/// The `get` answer; borrowed, so the secret is copied only into the output.
#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a str,
}

/// The protocol's error form: the message on stdout, status 1.
fn fail(message: &str) -> i32 {
    let _ = crate::output::println(message);
    1
}

/// Reads standard input, up to one byte more than [`MAX_STDIN`] (a
/// kubelet's request may be as long as [`credhost::kubelet::MAX_REQUEST`]).
fn read_stdin() -> Result<Zeroizing<Vec<u8>>> {
    read_input(credhost::kubelet::MAX_REQUEST as u64)
}

/// Reads standard input, up to one byte more than `max`.
pub fn read_input(max: u64) -> Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
    std::io::stdin()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| credhost::Error::io("cannot read", Path::new("standard input"), e))?;
    Ok(bytes)
}

/// The configured registries and a runtime for one request (a single
/// thread is plenty: plugins run on their own); `hint` says how to name a
/// configuration when there is none.
fn registries_and_runtime(hint: &str) -> Result<(Registries, tokio::runtime::Runtime)> {
    let path = config_path().ok_or_else(|| credhost::Error::Config {
        location: credhost::config::CONFIG_ENV.into(),
        message: format!("no configuration: {hint}"),
    })?;
    let registries = Registries::from_file(&path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))?;
    Ok((registries, runtime))
}

/// Whether `input` is a kubelet's CredentialProviderRequest rather than a
/// server URL (which is never a JSON object).
fn is_kubelet_request(input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    text.trim_start().starts_with('{') && text.contains(credhost::kubelet::REQUEST_KIND)
}

/// The kubelet's answer, as `credhost kubelet-provider` gives it: errors
/// are one line on standard error and a non-zero status, as the kubelet
/// reads them.
fn kubelet(input: &[u8]) -> i32 {
    let answer = (|| -> Result<i32> {
        let (registries, runtime) =
            registries_and_runtime("set CREDHOST_CONFIG in the kubelet's provider config (env)")?;
        let registries = registries.for_kubelet();
        let code = runtime.block_on(crate::commands::kubelet_answer(&registries, input, Default::default()));
        runtime.shutdown_background();
        code
    })();
    match answer {
        Ok(code) => code,
        Err(e) => {
            eprintln!("docker-credential-credhost: {}", e.message());
            e.exit_code().max(1)
        }
    }
}

/// The server URL of a `get` request, from what was read on standard input
/// (surrounding white space removed), or the one-line reason it is none.
#[doc(hidden)]
pub fn get_request(input: &[u8]) -> std::result::Result<&str, String> {
    if input.len() as u64 > MAX_STDIN {
        return Err(format!("standard input is over {MAX_STDIN} bytes; `get` expects one server URL"));
    }
    let text = std::str::from_utf8(input)
        .map_err(|_| "standard input is not UTF-8 text; `get` expects one server URL".to_owned())?;
    let server = text.trim();
    if server.is_empty() {
        return Err("no credentials server URL".into());
    }
    Ok(server)
}

fn run(action: &str, input: Zeroizing<Vec<u8>>) -> Result<i32> {
    let server = if action == "get" {
        match get_request(&input) {
            // The URL is not logged: a client may pass `user:password@host`.
            Ok(server) => Some(server),
            Err(why) => return Ok(fail(&why)),
        }
    } else {
        None
    };
    let (registries, runtime) =
        registries_and_runtime("set CREDHOST_CONFIG or create ~/.config/credhost/plugins.toml")?;
    let result = runtime.block_on(async {
        match server {
            Some(server) => match registries.get(server).await? {
                Some(auth) => {
                    let answer =
                        Answer { server_url: server, username: auth.username.as_str(), secret: auth.secret.expose() };
                    let text = Zeroizing::new(
                        serde_json::to_string(&answer).map_err(|e| Error::Usage(format!("cannot format JSON: {e}")))?,
                    );
                    crate::output::println(&text)?;
                    Ok(0)
                }
                None => Ok(fail(NOT_FOUND)),
            },
            None => {
                let (list, failed) = registries.list().await?;
                for (host, e) in failed {
                    tracing::warn!(target: "credhost::helper", "{host}: {}", credhost::one_line(&e.to_string()));
                }
                let text =
                    serde_json::to_string(&list).map_err(|e| Error::Usage(format!("cannot format JSON: {e}")))?;
                crate::output::println(&text)?;
                Ok(0)
            }
        }
    });
    runtime.shutdown_background();
    result
}
