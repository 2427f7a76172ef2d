//! `credhost plugins install` of the aws plugin (the largest shipped file)
//! from the local Distribution registries, whole process: start, registry
//! credentials, tag resolved, manifest and layer fetched and checked, the
//! file vetted in a child process and renamed into place. Each run installs
//! into an empty directory; the median and the slowest of
//! `CREDHOST_INSTALL_RUNS` runs (default 10) are printed. A figure for
//! BENCHMARKS.md, not a timed test: the only failures are failed commands.
//!
//! ```text
//! tests/services/up.sh && source tests/services/.run/env
//! cargo test --release -p credhost-e2e --test plugin_install
//! ```

use credhost_e2e::*;

fn main() {
    let runs: usize = std::env::var("CREDHOST_INSTALL_RUNS")
        .ok()
        .map(|v| v.parse().expect("CREDHOST_INSTALL_RUNS must be a number"))
        .unwrap_or(10)
        .max(1);
    let svc = Services::get();
    let file = artifact(&lib_file("credhost_aws"));
    let size = std::fs::metadata(&file).expect("the aws plugin is built").len();
    println!(
        "`credhost plugins install` of the aws plugin ({:.1} MiB), {runs} runs each (new process every run):",
        size as f64 / 1048576.0
    );
    let repo = format!("bench-install-{}", std::process::id());
    let cases = [
        ("open registry, by tag", Workspace::local_fs(&svc.var("CREDHOST_TEST_REGISTRY_OPEN")), false),
        ("open registry, by digest", Workspace::local_fs(&svc.var("CREDHOST_TEST_REGISTRY_OPEN")), true),
        ("token-auth registry, by tag", Workspace::local_token(&svc), false),
    ];
    let mut failed = false;
    for (what, ws, by_digest) in &cases {
        let registry = if what.starts_with("token") {
            svc.var("CREDHOST_TEST_REGISTRY_TOKEN")
        } else {
            svc.var("CREDHOST_TEST_REGISTRY_OPEN")
        };
        let tag = format!("{registry}/{repo}:v1");
        let pushed = ws.run(&["plugins", "push", file.to_str().unwrap(), &tag]);
        if pushed.code() != 0 {
            eprintln!("{what}: push failed: {}", pushed.stderr().trim_end());
            failed = true;
            continue;
        }
        let reference = if *by_digest { format!("{registry}/{repo}@{}", pushed.stdout().trim()) } else { tag };
        failed |= !time_runs(what, 30, runs, |run| {
            let dir = ws.path(&format!("installed-{run}"));
            ws.cmd(&["plugins", "install", &reference, "--dir", dir.to_str().unwrap()])
        });
    }
    if failed {
        std::process::exit(1);
    }
}
