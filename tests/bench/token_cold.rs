//! Cold `credhost token` per platform against its local test service: each
//! run is a new process (start, configuration, plugin load, provider,
//! credentials from the service, output), timed from spawn to exit; the
//! median and the slowest of `CREDHOST_TOKEN_COLD_RUNS` runs (default 10)
//! are printed. A figure for BENCHMARKS.md, not a timed test: the only
//! failures are commands that fail or answer nothing.
//!
//! ```text
//! tests/services/up.sh && source tests/services/.run/env
//! cargo test --release -p credhost-e2e --test token_cold
//! ```

use std::process::Command;

use credhost_e2e::{backend::*, gcp::GOOGLE_VARS, *};

fn main() {
    let runs: usize = std::env::var("CREDHOST_TOKEN_COLD_RUNS")
        .ok()
        .map(|v| v.parse().expect("CREDHOST_TOKEN_COLD_RUNS must be a number"))
        .unwrap_or(10)
        .max(1);
    let svc = Services::get();
    println!("cold `credhost token`, {runs} runs each (new process every run):");
    let mut cases: Vec<Case> = Vec::new();
    cases.push(Case::new("local, fs store, open registry (no request)", Workspace::local_fs("127.0.0.1:1")));
    cases.push(Case::new("local, htpasswd registry (basic)", Backend::new(Kind::Fs).ws()));
    let mut token = Workspace::local(&format!(
        "registry = {{ url = \"http://{}\", auth = \"token\", username_env = \"REG_USER\", password_env = \"REG_PASS\", scope = \"repository:bench:pull,push\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}",
        svc.var("CREDHOST_TEST_REGISTRY_TOKEN")
    ));
    token.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    token.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    cases.push(Case::new("local, Distribution token auth", token));
    cases.push(Case::new("aws, ECR on moto", Backend::new(Kind::AwsMoto).ws()));
    let gcp = Backend::new(Kind::Gcp).ws();
    // No gcloud files of this machine: HOME is the workspace.
    let home = gcp.path("").display().to_string();
    cases.push(Case { home: Some(home), ..Case::new("gcp, key file and token endpoint", gcp) });

    let mut failed = false;
    for Case { what, ws, home } in &cases {
        failed |= !time_runs(what, 45, runs, |_| {
            let mut cmd: Command = ws.cmd(&["token"]);
            for k in GOOGLE_VARS {
                cmd.env_remove(k);
            }
            if let Some(home) = home {
                cmd.env("HOME", home);
            }
            cmd
        });
    }
    if failed {
        std::process::exit(1);
    }
}

/// One platform's workspace.
struct Case {
    what: &'static str,
    ws: Workspace,
    /// `HOME` for the command, when not the caller's.
    home: Option<String>,
}

impl Case {
    fn new(what: &'static str, ws: Workspace) -> Self {
        Self { what, ws, home: None }
    }
}
