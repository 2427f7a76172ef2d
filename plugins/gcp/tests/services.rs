//! The plugin as a library against the real services of
//! `tests/services/up.sh`: gcp-storage-emulator behind the token-checking
//! proxy, and the local OAuth token endpoint. Small chunks make many-chunk
//! uploads cheap. A missing service fails these tests; it never skips them.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use credhost_gcp::{
    auth::{
        key::Credentials,
        token::{TokenSource, SCOPE},
    },
    store::upload::CHUNK_QUANTUM,
    GcpProvider,
};
use credhost_plugin_sdk::{Context, Dest, Download, ErrorKind, Progress, Provider as _, Secret, Source, Upload};

struct Services(HashMap<String, String>);

impl Services {
    fn get() -> Self {
        let dir = std::env::var_os("CREDHOST_TEST_SERVICES_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/services/.run"));
        let text = std::fs::read_to_string(dir.join("env")).unwrap_or_else(|e| {
            panic!("services are not running ({}: {e}): start them with tests/services/up.sh", dir.display())
        });
        Self(
            text.lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches(['"', '\'']).to_owned()))
                .collect(),
        )
    }

    fn var(&self, k: &str) -> &str {
        self.0.get(k).unwrap_or_else(|| panic!("{k} missing from the services env file: restart tests/services/up.sh"))
    }

    async fn control(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut rb = reqwest::Client::new().request(method, url);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("control request");
        assert!(resp.status().is_success(), "control request: {}", resp.status());
        resp.json().await.expect("control JSON")
    }

    /// A fresh key whose tokens live `lifetime` seconds.
    async fn new_key(&self, lifetime: u64) -> serde_json::Value {
        let url = format!("{}/_test/service-account?lifetime={lifetime}", self.var("CREDHOST_TEST_GCP_AUTH"));
        self.control(reqwest::Method::POST, url, None).await
    }

    async fn fault(&self, fault: serde_json::Value) {
        let url = format!("{}/_proxy/fault", self.var("CREDHOST_TEST_GCS_ENDPOINT"));
        self.control(reqwest::Method::POST, url, Some(fault)).await;
    }

    async fn stats(&self, object: &str) -> serde_json::Value {
        let url = format!("{}/_proxy/stats?object={object}", self.var("CREDHOST_TEST_GCS_ENDPOINT"));
        self.control(reqwest::Method::GET, url, None).await
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}.bin", std::process::id())
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn provider(svc: &Services, dir: &std::path::Path, key: &serde_json::Value) -> GcpProvider {
    std::fs::write(dir.join("key.json"), key.to_string()).unwrap();
    let settings = serde_json::json!({
        "project_id": svc.var("CREDHOST_TEST_GCP_PROJECT"),
        "location": "us-central1",
        "registry": "us-central1-docker.pkg.dev",
        "bucket": svc.var("CREDHOST_TEST_GCS_BUCKET"),
        "credentials": {"service_account_file": "key.json"},
        "storage_endpoint": svc.var("CREDHOST_TEST_GCS_ENDPOINT"),
    });
    GcpProvider::from_settings(settings, Context { base_dir: dir.to_path_buf() }).await.expect("provider")
}

fn upload_req(name: &str, path: PathBuf) -> Upload {
    Upload {
        name: name.to_owned(),
        source: Source::Path(path),
        size_hint: None,
        progress: Progress::default(),
        content_type: None,
        extra: HashMap::new(),
    }
}

fn download_req(bucket: &str, name: &str, path: PathBuf) -> Download {
    Download {
        bucket: bucket.to_owned(),
        name: name.to_owned(),
        dest: Dest::Path(path),
        progress: Progress::default(),
        extra: HashMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_verify_with_the_public_half_and_buy_a_token() {
    let svc = Services::get();
    let json = std::fs::read_to_string(svc.var("CREDHOST_TEST_GCP_KEY_FILE")).unwrap();
    let Credentials::ServiceAccount(key) = Credentials::parse(Secret::new(json.clone()), "test key").unwrap() else {
        panic!("the default test key is not a service-account key");
    };
    let debug = format!("{key:?}");
    assert!(debug.contains("private_key: \"<redacted>\""), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");

    let jwt = key.assertion(SCOPE, 1_700_000_000).unwrap();
    let parts: Vec<&str> = jwt.expose().split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signature = b64.decode(parts[2]).unwrap();
    let public =
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key.public_key_der());
    public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).expect("signature verifies");
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], key.client_email.as_str());
    assert_eq!(claims["aud"], svc.var("CREDHOST_TEST_GCP_TOKEN_URI"));
    assert_eq!((claims["iat"].as_i64(), claims["exp"].as_i64()), (Some(1_700_000_000), Some(1_700_003_600)));

    // The real endpoint accepts a fresh one and issues a token it recognises.
    let source = credhost_gcp::auth::Source::File(Credentials::parse(Secret::new(json), "test key").unwrap());
    let tokens = TokenSource::new(source, reqwest::Client::new()).unwrap();
    let token = tokens.token().await.unwrap();
    assert!(token.lifetime > 3000, "{}", token.lifetime);
    let url = format!("{}/_test/tokeninfo?access_token={}", svc.var("CREDHOST_TEST_GCP_AUTH"), token.secret.expose());
    let info = svc.control(reqwest::Method::GET, url, None).await;
    assert_eq!(info["account"], key.client_email.as_str());
    // Cached: the same token again.
    assert_eq!(tokens.token().await.unwrap().secret, token.secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_chunks_survive_cut_partial_and_refused_requests() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let key = svc.new_key(3600).await;
    let p = provider(&svc, dir.path(), &key).await.with_chunk_size(CHUNK_QUANTUM);
    let name = unique("chunks");
    let data = pseudo_random(10 * CHUNK_QUANTUM + 12_345, 7);
    std::fs::write(dir.path().join("src"), &data).unwrap();
    // The 3rd chunk request: the server keeps 100 000 of its bytes and the
    // answer is lost; the 6th: the server keeps all of it and the answer is
    // lost; the 8th: 503 without reaching the server.
    for (n, mode) in [(3, "partial"), (6, "drop"), (8, "error")] {
        svc.fault(serde_json::json!({"object": name, "op": "upload", "n": n, "mode": mode, "keep": 100_000})).await;
    }
    let put = p.upload(upload_req(&name, dir.path().join("src"))).await.expect("upload");
    assert_eq!(put.size, data.len() as u64);
    let stats = svc.stats(&name).await;
    assert_eq!(stats["faults"], 3, "{stats}");
    assert_eq!(stats["initiations"], 1, "the session was resumed, not restarted: {stats}");
    assert!(stats["status_queries"].as_u64().unwrap() >= 3, "{stats}");
    // Each byte reached the server exactly once: every resumption started
    // where the server said it stood.
    assert_eq!(stats["bytes_up"].as_u64().unwrap(), data.len() as u64, "{stats}");
    assert_eq!(stats["denied"], 0, "{stats}");

    svc.fault(serde_json::json!({"object": name, "op": "download", "n": 1, "mode": "cut", "keep": 1_000_000})).await;
    let got = p.download(download_req(&put.bucket, &name, dir.path().join("dst"))).await.expect("download");
    assert_eq!(got.checksum, put.checksum);
    assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), data);
    let stats = svc.stats(&name).await;
    assert_eq!(stats["range_gets"], 1, "{stats}");
    assert_eq!(stats["bytes_down"].as_u64().unwrap(), data.len() as u64, "resumed, not restarted: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_chunk_never_becomes_the_object() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let p = provider(&svc, dir.path(), &svc.new_key(3600).await).await.with_chunk_size(CHUNK_QUANTUM);
    let name = unique("corrupt");
    std::fs::write(dir.path().join("src"), pseudo_random(3 * CHUNK_QUANTUM + 1, 9)).unwrap();
    svc.fault(serde_json::json!({"object": name, "op": "upload", "n": 2, "mode": "corrupt"})).await;
    let e = p.upload(upload_req(&name, dir.path().join("src"))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::INTEGRITY, "{}", e.message);
    assert!(e.message.to_lowercase().contains("crc32c"), "{}", e.message);
    let e = p.download(download_req("projects", &name, dir.path().join("dst"))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NOT_FOUND, "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_replaced_before_they_expire() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let key = svc.new_key(4).await;
    let p = Arc::new(provider(&svc, dir.path(), &key).await.with_chunk_size(CHUNK_QUANTUM));
    let name = unique("refresh");
    let data = pseudo_random(6 * CHUNK_QUANTUM, 3);
    std::fs::write(dir.path().join("src"), &data).unwrap();
    // Each chunk takes a second at the proxy: the upload outlives its first token.
    svc.fault(
        serde_json::json!({"object": name, "op": "upload", "n": 1, "mode": "delay", "delay": 1.0, "every": true}),
    )
    .await;
    p.upload(upload_req(&name, dir.path().join("src"))).await.expect("upload");
    let stats = svc.stats(&name).await;
    assert_eq!(stats["denied"], 0, "no request went out with an expired token: {stats}");
    assert!(stats["tokens"].as_u64().unwrap() >= 2, "the token was replaced: {stats}");
    p.download(download_req("projects", &name, dir.path().join("dst"))).await.expect("download");
    assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), data);
}
