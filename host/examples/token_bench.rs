//! In-process figures for BENCHMARKS.md (run by `bench/run` when built):
//!
//! - load time of each built plugin file (vetting, `dlopen`, the root module);
//! - registry credentials from the local plugin, basic auth against a small
//!   registry stand-in (its own thread and runtime) that counts the requests
//!   it answers: the first call (provider construction and the credential
//!   check), a cache hit, and 10,000 concurrent requests for one key, cold
//!   (one upstream call is the target; 11 rounds, each with a new host, with
//!   how long the upstream answer took and how many requests waited for it)
//!   and warm (p50 and p99 latency).
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

/// Cold stampedes run, each against a new host.
const COLD_ROUNDS: usize = 11;

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
/// credentials and 401 otherwise, counting every request. It runs on a
/// thread and runtime of its own, as a real registry is another process:
/// the 10,000 requesting tasks must not delay its answer by sharing the
/// host's worker threads with it.
fn registry(hits: Arc<AtomicUsize>) -> SocketAddr {
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("non-blocking listener");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("registry runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await
        })
    });
    addr
}

async fn tokens(release: &Path) -> credhost::Result<()> {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = registry(hits.clone());
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

    // A new host each round: a new provider, an empty cache, then 10,000
    // callers at once. On two shared cores single rounds vary (a waiter's
    // latency includes the one upstream call), so several rounds are run.
    let mut p99s = Vec::with_capacity(COLD_ROUNDS);
    let mut p50s = Vec::with_capacity(COLD_ROUNDS);
    let mut alls = Vec::with_capacity(COLD_ROUNDS);
    let mut upstreams = Vec::with_capacity(COLD_ROUNDS);
    let mut wakes = Vec::with_capacity(COLD_ROUNDS);
    let mut waiters = Vec::with_capacity(COLD_ROUNDS);
    let mut calls = 0;
    let mut provider = None;
    for _ in 0..COLD_ROUNDS {
        let host = credhost::Host::from_file(&config, None)?;
        let fresh = host.active().await?;
        let before = hits.load(Ordering::Relaxed);
        let cold = stampede(&fresh, "repository:bench:pull").await?;
        calls = calls.max(hits.load(Ordering::Relaxed) - before);
        p50s.push(pct(&cold.latencies, 50));
        p99s.push(pct(&cold.latencies, 99));
        alls.push(cold.all);
        upstreams.push(cold.upstream);
        wakes.push(cold.wake);
        waiters.push(cold.waiters);
        provider = Some(fresh);
    }
    let provider = provider.expect("at least one round");
    for v in [&mut p50s, &mut p99s, &mut alls, &mut upstreams, &mut wakes] {
        v.sort();
    }
    waiters.sort_unstable();
    println!(
        "  {CONCURRENT} concurrent, one key, cold, {COLD_ROUNDS} rounds (new host each): at most {calls} upstream call(s) per round; \
         p50 {:.2} ms; p99 median {:.2} ms (best {:.2}, worst {:.2}); all done in {:.2} ms (median)",
        ms(pct(&p50s, 50)),
        ms(pct(&p99s, 50)),
        ms(p99s[0]),
        ms(p99s[p99s.len() - 1]),
        ms(pct(&alls, 50))
    );
    println!(
        "    (medians) the upstream answer came {:.2} ms after the first request started; \
         {} requests had started by then and waited for it; the last of them was answered {:.2} ms after it",
        ms(pct(&upstreams, 50)),
        waiters[waiters.len() / 2],
        ms(pct(&wakes, 50))
    );
    let before = hits.load(Ordering::Relaxed);
    let warm = stampede(&provider, "repository:bench:pull").await?;
    println!(
        "  {CONCURRENT} concurrent, one key, warm: {} upstream call(s); p50 {:.3} ms, p99 {:.3} ms, all done in {:.2} ms",
        hits.load(Ordering::Relaxed) - before,
        ms(pct(&warm.latencies, 50)),
        ms(pct(&warm.latencies, 99)),
        ms(warm.all)
    );
    Ok(())
}

/// One stampede: every request's latency (sorted) and the wall time of
/// all. Nothing is cached before the upstream answer, so the first request
/// answered marks it: `upstream` is how long after the first request started
/// that came, `waiters` how many requests had started by then (they waited
/// for it), and `wake` how long after it the last of them was answered.
struct Stampede {
    latencies: Vec<Duration>,
    all: Duration,
    upstream: Duration,
    waiters: usize,
    wake: Duration,
}

/// [`CONCURRENT`] simultaneous requests for `scope`.
async fn stampede(provider: &credhost::ProviderHandle, scope: &str) -> credhost::Result<Stampede> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (p, scope) = (provider.clone(), scope.to_owned());
            tokio::spawn(async move {
                let t = Instant::now();
                p.registry_auth(None, Some(&scope)).await.map(|_| (t, Instant::now()))
            })
        })
        .collect();
    let mut spans = Vec::with_capacity(CONCURRENT);
    for task in tasks {
        spans.push(task.await.map_err(|e| credhost::Error::Internal(e.to_string()))??);
    }
    let all = start.elapsed();
    let first_start = spans.iter().map(|s| s.0).min().unwrap_or(start);
    let answer = spans.iter().map(|s| s.1).min().unwrap_or(start);
    let waited: Vec<Instant> = spans.iter().filter(|(t, _)| *t < answer).map(|s| s.1).collect();
    let wake = waited.iter().max().map_or(Duration::ZERO, |last| *last - answer);
    let (upstream, waiters) = (answer - first_start, waited.len());
    let mut latencies: Vec<Duration> = spans.iter().map(|(t, end)| *end - *t).collect();
    latencies.sort();
    Ok(Stampede { latencies, all, upstream, waiters, wake })
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
