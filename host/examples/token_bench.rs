//! In-process figures for BENCHMARKS.md (run by `bench/run` when built):
//!
//! - load time of each built plugin file (vetting, `dlopen`, the root module);
//! - registry credentials from the local plugin, basic auth against a small
//!   in-process registry stand-in that counts the requests it answers:
//!   the first call (provider construction and the credential check), a
//!   cache hit, and 10,000 concurrent requests for one key, cold (one
//!   upstream call is the target) and warm (p50 and p99 latency).
//!
//! ```text
//! cargo build --release --workspace --examples && target/release/examples/token_bench
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{http::HeaderMap, response::IntoResponse, routing::get, Router};

const CONCURRENT: usize = 10_000;

fn main() {
    let release = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    println!("plugin load (vet + dlopen + root module), first load in this process:");
    for plugin in ["local", "aws", "gcp"] {
        let file = release.join(format!("libcredhost_{plugin}.so"));
        if !file.is_file() {
            println!("  {plugin:<6} n/a (not built)");
            continue;
        }
        let t = Instant::now();
        match credhost::loader::load_file(&file, None, Default::default()) {
            Ok(_) => println!("  {plugin:<6} {:>8.2} ms", ms(t.elapsed())),
            Err(e) => println!("  {plugin:<6} refused: {e}"),
        }
    }
    if let Err(e) = rt.block_on(tokens(&release)) {
        println!("registry credentials: failed: {e}");
        std::process::exit(1);
    }
}

/// The stand-in registry: `GET /v2/` answers 200 to the right basic
/// credentials and 401 otherwise, counting every request.
async fn registry(hits: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new().route(
        "/v2/",
        get(move |headers: HeaderMap| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::Relaxed);
                // base64("bench:bench-password")
                let good = headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some("Basic YmVuY2g6YmVuY2gtcGFzc3dvcmQ=");
                if good {
                    axum::http::StatusCode::OK.into_response()
                } else {
                    (axum::http::StatusCode::UNAUTHORIZED, [("www-authenticate", "Basic realm=\"bench\"")])
                        .into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn tokens(release: &Path) -> credhost::Result<()> {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = registry(hits.clone()).await;
    let work = tempfile::tempdir().map_err(|e| credhost::Error::io("cannot create", "a temporary directory", e))?;
    let config = work.path().join("plugins.toml");
    let text = format!(
        "platform = \"local\"\nplugin_dir = {:?}\n\n[plugins.local.settings]\nregistry = {{ url = \"http://{addr}\", auth = \"basic\", username_env = \"BENCH_REG_USER\", password_env = \"BENCH_REG_PASS\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n",
        release.display().to_string()
    );
    std::fs::write(&config, text).map_err(|e| credhost::Error::io("cannot write", &config, e))?;
    std::env::set_var("BENCH_REG_USER", "bench");
    std::env::set_var("BENCH_REG_PASS", "bench-password");

    println!("registry credentials, local plugin, basic auth against an in-process registry:");
    let host = credhost::Host::from_file(&config, None)?;
    let t = Instant::now();
    let provider = host.active().await?;
    let built = t.elapsed();
    let t = Instant::now();
    provider.registry_auth(None, None).await?;
    println!(
        "  provider built {:.2} ms; first call {:.2} ms ({} registry request)",
        ms(built),
        ms(t.elapsed()),
        hits.load(Ordering::Relaxed)
    );
    let mut hit: Vec<Duration> = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        provider.registry_auth(None, None).await?;
        hit.push(t.elapsed());
    }
    hit.sort();
    println!("  cache hit: p50 {:.1} µs, p99 {:.1} µs", us(pct(&hit, 50)), us(pct(&hit, 99)));

    // A new host: a new provider, an empty cache, then 10,000 callers at once.
    let host = credhost::Host::from_file(&config, None)?;
    let provider = host.active().await?;
    let before = hits.load(Ordering::Relaxed);
    let cold = stampede(&provider, "repository:bench:pull").await?;
    let calls = hits.load(Ordering::Relaxed) - before;
    println!(
        "  {CONCURRENT} concurrent, one key, cold: {calls} upstream call(s); p50 {:.2} ms, p99 {:.2} ms, all done in {:.2} ms",
        ms(pct(&cold.0, 50)),
        ms(pct(&cold.0, 99)),
        ms(cold.1)
    );
    let warm = stampede(&provider, "repository:bench:pull").await?;
    println!(
        "  {CONCURRENT} concurrent, one key, warm: {} upstream call(s); p50 {:.3} ms, p99 {:.3} ms, all done in {:.2} ms",
        hits.load(Ordering::Relaxed) - before - calls,
        ms(pct(&warm.0, 50)),
        ms(pct(&warm.0, 99)),
        ms(warm.1)
    );
    Ok(())
}

/// Latencies of [`CONCURRENT`] simultaneous requests (sorted) and the wall time of all.
async fn stampede(provider: &credhost::ProviderHandle, scope: &str) -> credhost::Result<(Vec<Duration>, Duration)> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (p, scope) = (provider.clone(), scope.to_owned());
            tokio::spawn(async move {
                let t = Instant::now();
                p.registry_auth(None, Some(&scope)).await.map(|_| t.elapsed())
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(CONCURRENT);
    for task in tasks {
        latencies.push(task.await.map_err(|e| credhost::Error::Internal(e.to_string()))??);
    }
    let all = start.elapsed();
    latencies.sort();
    Ok((latencies, all))
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
