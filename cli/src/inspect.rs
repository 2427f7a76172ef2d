//! `credhost plugins inspect`: the file is vetted and loaded in a child
//! process (this same executable, run with [`CHILD_ARG`]), because loading
//! a library runs its code (its constructors) before anything can be asked
//! of it: a library that crashes or hangs there ends the child, and the
//! inspection says so instead of ending credhost without a word.

use std::{ffi::OsString, path::Path, process::Stdio, time::Duration};

use credhost::{
    loader::{self, LoadError, Policy},
    PluginInfo,
};

use crate::error::{exit, Error, Result};

/// The first argument that makes `credhost` the inspecting child.
pub const CHILD_ARG: &str = "__inspect-plugin-file";

/// What starts the line of the child's report: a library's constructors may
/// write to standard output too, before it.
const REPORT_PREFIX: &str = "credhost-inspect-report: ";

/// How long a library may take to load before the child is stopped.
const DEADLINE: Duration = Duration::from_secs(60);

/// What the child found, as it tells the parent.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The file's sha256, when it was vetted for reading.
    pub sha256: Option<String>,
    /// What the plugin says about itself, when it loaded.
    pub info: Option<PluginInfo>,
    /// Why a host would refuse it.
    pub refused: Option<Refusal>,
}

/// Why a file would be refused.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    /// The one-line reason.
    pub message: String,
    /// The exit code it maps to.
    pub code: i32,
    /// abi_stable's layout report, for `-v`.
    pub layout: Option<String>,
}

impl Refusal {
    fn of(e: &LoadError) -> Self {
        let layout = match e {
            LoadError::LayoutMismatch { report, .. } => Some(report.clone()),
            _ => None,
        };
        Self { message: e.to_string(), code: crate::error::exit_code(e.kind()), layout }
    }
}

/// The child: inspects `FILE` with the policy in the next argument and
/// writes the [`Report`] as JSON on standard output.
pub fn child(args: &[OsString]) -> i32 {
    let [file, insecure] = args else {
        eprintln!("credhost: {CHILD_ARG} takes a file and a policy");
        return exit::USAGE;
    };
    let policy = Policy { allow_insecure_permissions: insecure == "insecure" };
    let found = loader::inspect(Path::new(file), policy);
    let report = Report { sha256: found.sha256, info: found.info, refused: found.refused.as_ref().map(Refusal::of) };
    match serde_json::to_string(&report) {
        Ok(text) => i32::from(crate::output::println(&format!("\n{REPORT_PREFIX}{text}")).is_err()),
        Err(e) => {
            eprintln!("credhost: cannot encode the inspection: {e}");
            exit::OTHER
        }
    }
}

/// Inspects `file` in a child process. A child that dies, hangs or answers
/// nonsense is a refusal that says which.
pub async fn inspect(file: &Path, policy: Policy) -> Result<Report> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Lib(credhost::Error::Internal(format!("cannot find the credhost executable: {e}"))))?;
    let mut child = tokio::process::Command::new(exe)
        .arg(CHILD_ARG)
        .arg(file)
        .arg(if policy.allow_insecure_permissions { "insecure" } else { "strict" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Stopped with this future: a signal to credhost ends the child too.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Lib(credhost::Error::Internal(format!("cannot start the inspecting process: {e}"))))?;
    let mut stdout = child.stdout.take();
    let read = async {
        let mut text = String::new();
        if let Some(out) = stdout.as_mut() {
            tokio::io::AsyncReadExt::read_to_string(out, &mut text).await.ok();
        }
        (text, child.wait().await)
    };
    let refused = |message: String| Report {
        sha256: None,
        info: None,
        refused: Some(Refusal { message, code: exit::PLUGIN, layout: None }),
    };
    let shown = file.display();
    let (text, status) = match tokio::time::timeout(DEADLINE, read).await {
        Ok(done) => done,
        Err(_) => {
            return Ok(refused(format!(
                "{shown} did not finish loading within {} s (a library runs code while it loads); the inspection was stopped",
                DEADLINE.as_secs()
            )))
        }
    };
    let status =
        status.map_err(|e| Error::Lib(credhost::Error::Internal(format!("cannot wait for the inspection: {e}"))))?;
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return Ok(refused(format!(
            "loading {shown} crashed the process that loaded it ({}): a host would crash the same way",
            signal_name(signal)
        )));
    }
    if !status.success() {
        return Ok(refused(format!(
            "loading {shown} ended the process that loaded it (exit status {}) before it could answer",
            status.code().unwrap_or(-1)
        )));
    }
    let report = text.lines().rev().find_map(|l| l.strip_prefix(REPORT_PREFIX));
    match report.map(serde_json::from_str::<Report>) {
        Some(Ok(report)) => Ok(report),
        _ => Ok(refused(format!("the process that loaded {shown} gave no readable report"))),
    }
}

/// `SIGSEGV (signal 11)`, or the number alone.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    format!("{name}, signal {signal}")
}
