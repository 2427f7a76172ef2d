//! What `isolation = "process"` costs per call, beside in-process, for
//! BENCHMARKS.md: a plugin that answers registry credentials at once (the
//! `crash` test fixture, behaving), so that only the boundary is measured.
//!
//! - cold: a new host, its provider (in process mode: the child started,
//!   its handshake, the plugin loaded there) and the first call;
//! - warm: one call after another on the same provider, each with a scope
//!   of its own so that the host's cache does not answer it (p50, p99).
//!
//! ```text
//! cargo build --release --workspace --examples && target/release/examples/isolation_bench
//! ```

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

const COLD_ROUNDS: usize = 21;
const WARM_CALLS: usize = 20_000;

fn main() {
    let release = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let fixture = release.join("libfixture_crash.so");
    if !fixture.is_file() {
        println!("isolation: n/a ({} not built: cargo build --release --workspace)", fixture.display());
        return;
    }
    let dir = tempfile::Builder::new().prefix("isolation-bench-").tempdir_in(&release).expect("a temporary directory");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins directory");
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).expect("permissions");
    std::fs::copy(&fixture, plugins.join("libcredhost_crash.so")).expect("copy the fixture");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    println!("registry credentials from a plugin that answers at once ({WARM_CALLS} warm calls, {COLD_ROUNDS} cold):");
    for isolation in ["in-process", "process"] {
        let config = dir.path().join(format!("{isolation}.toml"));
        std::fs::write(
            &config,
            format!(
                "platform = \"crash\"\nplugin_dir = \"plugins\"\n\n[plugins.crash]\nisolation = \"{isolation}\"\n\n[plugins.crash.settings]\nhow = \"abort\"\nin = \"never\"\nmarker = {:?}\n",
                dir.path().join("marker").display().to_string()
            ),
        )
        .expect("plugins.toml");
        match rt.block_on(measure(&config)) {
            Ok((cold, warm)) => println!(
                "  {isolation:<10}  cold (host, provider, first call): median {:.2} ms, worst {:.2} ms; warm: p50 {:.1} µs, p99 {:.1} µs",
                ms(pct(&cold, 50)),
                ms(pct(&cold, 100)),
                us(pct(&warm, 50)),
                us(pct(&warm, 99)),
            ),
            Err(e) => {
                println!("  {isolation:<10}  failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

async fn measure(config: &Path) -> credhost::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut cold = Vec::with_capacity(COLD_ROUNDS);
    for round in 0..COLD_ROUNDS {
        let t = Instant::now();
        let host = credhost::Host::from_file(config, None)?;
        let provider = host.active().await?;
        provider.registry_auth(None, Some(&format!("repository:cold/{round}:pull"))).await?;
        cold.push(t.elapsed());
    }
    let host = credhost::Host::from_file(config, None)?;
    let provider = host.active().await?;
    let mut warm = Vec::with_capacity(WARM_CALLS);
    for call in 0..WARM_CALLS {
        let scope = format!("repository:warm/{call}:pull");
        let t = Instant::now();
        provider.registry_auth(None, Some(&scope)).await?;
        warm.push(t.elapsed());
    }
    cold.sort();
    warm.sort();
    Ok((cold, warm))
}

/// The `p`th percentile of sorted `v` (100: the largest).
fn pct(v: &[Duration], p: usize) -> Duration {
    v[((v.len() - 1) * p / 100).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
