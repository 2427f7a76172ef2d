//! A deployment service embedding credhost: it receives project ZIPs over HTTP
//! and streams each one to storage through the active provider, in bounded
//! memory whatever the size, and hands out registry tokens.
//!
//! It follows `plugins.toml` live: edit the file (e.g. `platform = "aws"`) and
//! the new platform is checked and swapped in without a restart; uploads
//! already running finish where they started, and a broken edit is rejected
//! while the old platform keeps serving (`GET /platform` says why).
//!
//! ```text
//! cargo run --release --example serve -- [PLUGINS_TOML] [ADDR]     (default plugins.toml 127.0.0.1:8080)
//! curl --data-binary @1234.zip http://127.0.0.1:8080/projects/1234.zip
//! curl --data-binary @1234.zip http://127.0.0.1:8080/projects/1234/deploys/7
//! curl http://127.0.0.1:8080/token
//! curl http://127.0.0.1:8080/platform
//! ```
//!
//! A deploy (`POST /projects/PID/deploys/DEPLOY_ID`) is stored as
//! `PID/DEPLOY_ID.zip`, create-only: deploys are immutable, and two racing
//! deploys of one id cannot overwrite each other (the second gets 409).
//!
//! `SERVE_WATCH_INTERVAL_MS` sets how often the file is read (default 1000).

use std::{io::Read, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{header::CONTENT_TYPE, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use futures::StreamExt;

struct App {
    live: credhost::LiveHost,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let config = PathBuf::from(args.next().unwrap_or_else(|| "plugins.toml".into()));
    let addr: SocketAddr = match args.next().unwrap_or_else(|| "127.0.0.1:8080".into()).parse() {
        Ok(a) => a,
        Err(e) => fail(format!("invalid address: {e}"), 2),
    };
    let interval = match std::env::var("SERVE_WATCH_INTERVAL_MS") {
        Ok(ms) => match ms.parse() {
            Ok(ms) => Duration::from_millis(ms),
            Err(e) => fail(format!("invalid SERVE_WATCH_INTERVAL_MS {ms:?}: {e}"), 2),
        },
        Err(_) => Duration::from_secs(1),
    };
    let options = credhost::WatchOptions { interval, ..Default::default() };
    let live = credhost::LiveHost::watch(&config, None, options).await.unwrap_or_else(|e| fail(e.to_string(), 1));
    let app = Arc::new(App { live });
    let router = Router::new()
        .route("/projects/{name}", post(upload))
        .route("/projects/{pid}/deploys/{deploy}", post(deploy))
        .route("/token", get(token))
        .route("/platform", get(platform))
        .with_state(app);
    let listener =
        tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| fail(format!("cannot listen on {addr}: {e}"), 1));
    eprintln!("serving on http://{addr}");
    if let Err(e) = axum::serve(listener, router).await {
        fail(format!("server failed: {e}"), 1);
    }
}

fn fail(msg: String, code: i32) -> ! {
    eprintln!("serve: {msg}");
    std::process::exit(code)
}

/// `POST /projects/NAME`: the request body is the archive.
async fn upload(State(app): State<Arc<App>>, Path(name): Path<String>, body: Body) -> Response {
    // The whole upload uses the provider active when it started, even if the
    // platform switches meanwhile.
    store(app.live.provider(), &name, body, false).await
}

/// `POST /projects/PID/deploys/DEPLOY_ID`: stored as `PID/DEPLOY_ID.zip`,
/// create-only (409 when that deploy exists), the deploy named in the
/// audit log's line.
async fn deploy(State(app): State<Arc<App>>, Path((pid, deploy)): Path<(String, String)>, body: Body) -> Response {
    let provider = app.live.provider().with_audit_label(&format!("deploy {deploy} of project {pid}"));
    store(provider, &format!("{pid}/{deploy}.zip"), body, true).await
}

/// Streams `body` to storage as `name` through `provider`.
async fn store(provider: credhost::ProviderHandle, name: &str, body: Body, if_absent: bool) -> Response {
    // Frames go through a small channel to a blocking reader that the plugin
    // pulls from: at most a few frames are in memory at once.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(frame) = stream.next().await {
            let frame = frame.map_err(std::io::Error::other);
            let failed = frame.is_err();
            if tx.send(frame).await.is_err() || failed {
                break;
            }
        }
    });
    let reader = BodyReader { rx, current: Bytes::new() };
    let opts = credhost::UploadOptions { if_absent, ..Default::default() };
    match provider.upload_reader_with(name, reader, None, &opts).await {
        Ok(r) => match serde_json::to_value(Stored { platform: provider.name(), result: &r }) {
            Ok(v) => json(StatusCode::CREATED, v),
            Err(e) => json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": e.to_string()})),
        },
        Err(e) => error(e),
    }
}

/// The answer to an upload: the platform that stored it, and the library's
/// account of the object as every front end prints it.
#[derive(serde::Serialize)]
struct Stored<'a> {
    platform: &'a str,
    #[serde(flatten)]
    result: &'a credhost::TransferResult,
}

/// `GET /platform`: the active platform, how many switches happened, and why
/// the file's latest contents were rejected, if they were.
async fn platform(State(app): State<Arc<App>>) -> Response {
    let s = app.live.status();
    json(
        StatusCode::OK,
        serde_json::json!({"platform": s.platform, "generation": s.generation, "last_error": s.last_error}),
    )
}

/// `GET /token`: the registry token for build jobs, or `null`.
async fn token(State(app): State<Arc<App>>) -> Response {
    match app.live.provider().registry_auth(None, None).await {
        Ok(Some(a)) => json(StatusCode::OK, serde_json::json!({"REGISTRY_TOKEN": a.registry_token().expose()})),
        Ok(None) => json(StatusCode::OK, serde_json::Value::Null),
        Err(e) => error(e),
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// The HTTP status for a library error, by what the client should do next.
fn error(e: credhost::Error) -> Response {
    use credhost::ErrorKind as K;
    let status = match e.kind() {
        K::InvalidInput => StatusCode::BAD_REQUEST,
        K::NotFound => StatusCode::NOT_FOUND,
        K::AlreadyExists => StatusCode::CONFLICT,
        K::Unsupported => StatusCode::NOT_IMPLEMENTED,
        // The platform refused this service's credentials: not the client's fault.
        K::Unauthenticated | K::Unavailable | K::CheckFailed => StatusCode::BAD_GATEWAY,
        K::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        K::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(status, serde_json::json!({"error": e.to_string(), "kind": e.kind().name()}))
}

/// The request body as a blocking `Read`, for the plugin's reading thread.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
