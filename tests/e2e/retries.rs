//! Retries of the local plugin's registry token fetch against the real token
//! server, which answers with injected faults on request (a healthy server
//! cannot be made to fail on demand; see `tests/services/token_server.py`).
//!
//! Every test asks for a repository of its own, and the faults and the
//! request counts are keyed by that scope, so tests running at once do not
//! disturb each other.

use std::time::Instant;

use credhost_e2e::*;

/// Exit code of an authentication failure (`cli/src/error.rs`).
const EXIT_AUTH: i32 = 4;
/// Exit code of every other failure, an unavailable service included.
const EXIT_OTHER: i32 = 1;

/// The local plugin with token auth on the token-auth registry and `password`.
fn token_ws(svc: &Services, password: &str) -> Workspace {
    let mut ws = Workspace::local(&format!(
        "registry = {{ url = \"http://{}\", auth = \"token\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}",
        svc.var("CREDHOST_TEST_REGISTRY_TOKEN")
    ));
    ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    ws.set_env("REG_PASS", password);
    ws
}

/// A repository name no other test uses.
fn repository(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("retries-{tag}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// The token server's base URL (its realm without `/token`).
fn token_server(svc: &Services) -> String {
    svc.var("CREDHOST_TEST_TOKEN_REALM").trim_end_matches("/token").to_owned()
}

/// Arms `fault` (without its scope, which is `repo`'s) on the token server.
fn arm(svc: &Services, repo: &str, mut fault: serde_json::Value) {
    fault["scope"] = format!("repository:{repo}:").into();
    let (body, code) = curl(&["-XPOST", &format!("{}/_test/fault", token_server(svc)), "-d", &fault.to_string()]);
    assert_eq!(code, "200", "arming {fault}: {body}");
}

/// What the token server saw for `repo`: requests, faults, issued, denied,
/// first, last.
fn stats(svc: &Services, repo: &str) -> serde_json::Value {
    let (body, code) = curl(&[&format!("{}/_test/stats?scope=repository:{repo}:", token_server(svc))]);
    assert_eq!(code, "200", "stats: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats are not JSON ({e}): {body}"))
}

/// `(requests, faults, issued)` from [`stats`].
fn counts(s: &serde_json::Value) -> (u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    (n("requests"), n("faults"), n("issued"))
}

/// `credhost token --repository REPO --format json` in `ws`.
fn token(ws: &Workspace, repo: &str) -> Run {
    ws.run(&["token", "--repository", repo, "--format", "json"])
}

/// Asserts that `run` printed a registry token (a JWT) for the registry.
#[track_caller]
fn assert_token(svc: &Services, run: &Run) {
    let json: serde_json::Value = serde_json::from_str(&run.ok()).expect("token JSON");
    assert_eq!(json["server"], svc.var("CREDHOST_TEST_REGISTRY_TOKEN").as_str());
    assert_eq!(json["password"].as_str().unwrap_or_default().split('.').count(), 3, "a JWT: {json}");
}

#[test]
fn token_server_500_then_200_is_retried_and_succeeds() {
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let repo = repository("500");
    arm(&svc, &repo, serde_json::json!({"status": 500}));
    assert_token(&svc, &token(&ws, &repo));
    let s = stats(&svc, &repo);
    assert_eq!(counts(&s), (2, 1, 1), "requests, faults, tokens: {s}");
}

#[test]
fn token_server_429_then_200_waits_for_retry_after_and_succeeds() {
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let repo = repository("429");
    arm(&svc, &repo, serde_json::json!({"status": 429, "retry_after": 1}));
    assert_token(&svc, &token(&ws, &repo));
    let s = stats(&svc, &repo);
    assert_eq!(counts(&s), (2, 1, 1), "requests, faults, tokens: {s}");
    // The second request came after the second the server asked for.
    let waited = s["last"].as_f64().unwrap() - s["first"].as_f64().unwrap();
    assert!(waited >= 0.95, "retried after {waited:.3} s despite Retry-After: 1");
}

#[test]
fn a_dropped_token_answer_is_retried_and_succeeds() {
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let repo = repository("drop");
    // Status 0: the server reads the request and closes the connection unanswered.
    arm(&svc, &repo, serde_json::json!({"status": 0}));
    assert_token(&svc, &token(&ws, &repo));
    let s = stats(&svc, &repo);
    assert_eq!(counts(&s), (2, 1, 1), "requests, faults, tokens: {s}");
}

#[test]
fn three_transient_failures_then_200_use_the_fourth_and_last_attempt() {
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let repo = repository("5xx");
    for status in [503, 502, 504] {
        arm(&svc, &repo, serde_json::json!({"status": status}));
    }
    assert_token(&svc, &token(&ws, &repo));
    let s = stats(&svc, &repo);
    assert_eq!(counts(&s), (4, 3, 1), "requests, faults, tokens: {s}");
}

#[test]
fn a_token_server_failing_on_every_attempt_gives_up_after_four() {
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let repo = repository("down");
    // As many faults as attempts: a fifth attempt would get a token.
    arm(&svc, &repo, serde_json::json!({"status": 503, "n": 4}));
    let started = Instant::now();
    let err = token(&ws, &repo).fails_with(EXIT_OTHER);
    let took = started.elapsed();
    assert!(err.contains("503") && err.contains("after 4 attempts"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let s = stats(&svc, &repo);
    assert_eq!(counts(&s), (4, 4, 0), "requests, faults, tokens: {s}");
    // Three pauses of at most 100, 200 and 400 ms, far within the budget.
    assert!(took.as_secs() < 10, "took {took:?}");
}

#[test]
fn token_server_401_is_not_retried_and_is_an_auth_failure() {
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let repo = repository("401");
    arm(&svc, &repo, serde_json::json!({"status": 401}));
    let err = token(&ws, &repo).fails_with(EXIT_AUTH);
    assert!(err.contains("rejected") && err.contains("401"), "{err}");
    let s = stats(&svc, &repo);
    assert_eq!(counts(&s), (1, 1, 0), "requests, faults, tokens: {s}");
}

#[test]
fn token_server_403_is_not_retried_and_is_an_auth_failure() {
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let repo = repository("403");
    arm(&svc, &repo, serde_json::json!({"status": 403}));
    let err = token(&ws, &repo).fails_with(EXIT_AUTH);
    assert!(err.contains("rejected") && err.contains("403"), "{err}");
    let s = stats(&svc, &repo);
    assert_eq!(counts(&s), (1, 1, 0), "requests, faults, tokens: {s}");
}

#[test]
fn a_wrong_password_is_asked_once() {
    let svc = Services::get();
    let ws = token_ws(&svc, "not-the-password");
    let repo = repository("wrong");
    let err = token(&ws, &repo).fails_with(EXIT_AUTH);
    assert!(err.contains("rejected"), "{err}");
    assert!(!err.contains("not-the-password"), "secret leaked: {err}");
    let s = stats(&svc, &repo);
    assert_eq!((counts(&s), s["denied"].as_u64()), ((1, 0, 0), Some(1)), "{s}");
}

/// Sets the lifetime of the token server's tokens for `repo`.
fn lifetime(svc: &Services, repo: &str, secs: u64) {
    let rule = serde_json::json!({ "scope": format!("repository:{repo}:"), "expires_in": secs }).to_string();
    let (body, code) = curl(&[
        "-XPOST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &rule,
        &format!("{}/_test/lifetime", token_server(svc)),
    ]);
    assert_eq!(code, "200", "lifetime {rule}: {body}");
}

/// Sleeps until `at` (and a little more).
async fn until(at: std::time::SystemTime) {
    let left = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(300)).await;
}

/// A library user's cached token, past its refresh point: `fault` armed,
/// then `then` with the provider, the scope, the token and its expiry.
fn cached_then_fault<F, Fut>(tag: &str, fault: serde_json::Value, then: F)
where
    F: FnOnce(credhost::ProviderHandle, String, credhost::RegistryAuth) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    ws.apply_env();
    let repo = repository(tag);
    // 40 s: refreshed from 30 s on (a quarter of the lifetime before it
    // ends), which leaves the plugin's retries time to fail before expiry.
    lifetime(&svc, &repo, 40);
    let scope = format!("repository:{repo}:pull");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let first = provider.registry_auth(None, Some(&scope)).await.unwrap().expect("a token");
        let expires = first.expires_at.expect("an expiry");
        until(expires - std::time::Duration::from_secs(10)).await;
        arm(&svc, &repo, serde_json::json!({ "status": fault["status"], "n": 50 }));
        then(provider, scope, first).await;
    });
}

/// A refresh that meets a failing token server (503 on every attempt) is
/// answered with the cached token until it expires, and with the error
/// after; the server saw the refresh tried, and tried again after a pause.
#[test]
fn a_failing_refresh_serves_the_cached_token_until_it_expires() {
    cached_then_fault("stale", serde_json::json!({ "status": 503 }), |provider, scope, first| async move {
        let stale = provider.registry_auth(None, Some(&scope)).await.expect("the cached token, stale").unwrap();
        assert_eq!(stale.secret.expose(), first.secret.expose());
        // Within the pause after the failure: served without asking.
        let again = provider.registry_auth(None, Some(&scope)).await.expect("still the cached token").unwrap();
        assert_eq!(again.secret.expose(), first.secret.expose());
        until(first.expires_at.unwrap()).await;
        let err = provider.registry_auth(None, Some(&scope)).await.expect_err("expired: no stale token");
        assert_eq!(err.kind(), credhost::ErrorKind::Unavailable, "{err}");
    });
}

/// A refresh refused (401: the identity lost its rights) gets the error at
/// once, never the cached token.
#[test]
fn a_refused_refresh_gets_no_stale_token() {
    cached_then_fault("refused", serde_json::json!({ "status": 401 }), |provider, scope, _| async move {
        let err = provider.registry_auth(None, Some(&scope)).await.expect_err("refused: no stale token");
        assert_eq!(err.kind(), credhost::ErrorKind::Unauthenticated, "{err}");
    });
}

/// `LiveHost` refreshes a token it served before its refresh point, with
/// nobody asking: the token server sees the second request while no caller
/// waits, and the next caller gets the new token without a request.
#[test]
fn live_host_refreshes_a_served_token_in_the_background() {
    let svc = Services::get();
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    ws.apply_env();
    let repo = repository("ahead");
    // 40 s: refresh point at 30 s, refreshed ahead of it from about 23 s.
    lifetime(&svc, &repo, 40);
    let scope = format!("repository:{repo}:pull");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (live, first, expires) = live_token(&ws, &scope).await;
        assert_eq!(counts(&stats(&svc, &repo)), (1, 0, 1));
        until(expires - std::time::Duration::from_secs(12)).await;
        assert_eq!(counts(&stats(&svc, &repo)), (2, 0, 2), "not refreshed ahead of time");
        let second = live.provider().registry_auth(None, Some(&scope)).await.unwrap().expect("a token");
        assert_ne!(second.secret.expose(), first.secret.expose(), "the refreshed token was not served");
        assert!(second.expires_at > first.expires_at);
        assert_eq!(counts(&stats(&svc, &repo)), (2, 0, 2), "the caller asked the token server");
    });
}

/// A `LiveHost` over `ws`, a token for `scope` it served, and its expiry.
async fn live_token(
    ws: &Workspace,
    scope: &str,
) -> (credhost::LiveHost, credhost::RegistryAuth, std::time::SystemTime) {
    let live = credhost::LiveHost::open(&ws.path("plugins.toml"), None).await.unwrap();
    let first = live.provider().registry_auth(None, Some(scope)).await.unwrap().expect("a token");
    let expires = first.expires_at.expect("an expiry");
    (live, first, expires)
}

/// A token server and a Distribution registry that trusts it, both of this
/// test's own, so that the token server can be stopped.
struct PrivateTokenRegistry {
    registry: Server,
    token_server: Option<Server>,
    address: String,
}

impl PrivateTokenRegistry {
    /// Starts both in `ws`, tokens living `lifetime` seconds.
    fn start(svc: &Services, ws: &Workspace, lifetime: u64) -> Self {
        let (token_port, registry_port) = (free_port(), free_port());
        let dir = ws.path("token-server");
        let token_server = std::process::Command::new(svc.var("CREDHOST_TEST_PYTHON"))
            .arg(repo_root().join("tests/services/token_server.py"))
            .args(["--port", &token_port.to_string(), "--dir", dir.to_str().unwrap()])
            .args(["--service", "private-registry", "--issuer", "private-issuer"])
            .args(["--user", &svc.var("CREDHOST_TEST_REGISTRY_USER"), "--expires-in", &lifetime.to_string()])
            .env("CREDHOST_TEST_TOKEN_PASSWORD", svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(ws.path("token-server.log")).unwrap())
            .spawn()
            .expect("start token_server.py");
        let token_server = Server(token_server);
        wait_for_status(&format!("http://127.0.0.1:{token_port}/healthz"), "200");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: \"{data}\"\nhttp:\n  addr: 127.0.0.1:{registry_port}\nauth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: private-registry\n    issuer: private-issuer\n    rootcertbundle: \"{cert}\"\n",
            data = ws.path("registry-data").display(),
            cert = dir.join("cert.pem").display(),
        );
        std::fs::write(ws.path("registry.yml"), config).unwrap();
        let registry = std::process::Command::new("docker-registry")
            .args(["serve", ws.path("registry.yml").to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(ws.path("registry.log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        let registry = Server(registry);
        let address = format!("127.0.0.1:{registry_port}");
        wait_for_status(&format!("http://{address}/v2/"), "401");
        Self { registry, token_server: Some(token_server), address }
    }

    /// Stops the token server (connections to it are refused from now on).
    fn stop_token_server(&mut self) {
        self.token_server.take();
    }
}

impl Drop for PrivateTokenRegistry {
    fn drop(&mut self) {
        self.token_server.take();
        let _ = self.registry.0.kill();
    }
}

/// Waits (at most 20 s) for `url` to answer `status`.
fn wait_for_status(url: &str, status: &str) {
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            .expect("spawn curl");
        if String::from_utf8_lossy(&out.stdout) == status {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not answer {status}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The registry's token server stopped while `LiveHost` holds a token:
/// the refresh ahead of time fails (warned), callers past the refresh point
/// get the cached token without waiting, and after its expiry the error.
#[test]
fn a_stopped_token_server_leaves_the_cached_token_in_use_until_it_expires() {
    let logs = capture_logs();
    let svc = Services::get();
    let mut ws = Workspace::new();
    let mut registry = PrivateTokenRegistry::start(&svc, &ws, 40);
    ws.write_config(&format!(
        "platform = \"local\"\nplugin_dir = \"{}\"\n\n[plugins.local]\nplugin = \"local\"\n[plugins.local.settings]\nregistry = {{ url = \"http://{}\", auth = \"token\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n",
        release_dir().display(),
        registry.address
    ));
    ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    ws.apply_env();
    let repo = repository("stopped");
    let scope = format!("repository:{repo}:pull");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (live, first, expires) = live_token(&ws, &scope).await;
        registry.stop_token_server();

        // Past the refresh point (10 s before expiry), the refresh ahead of
        // time has failed, with nobody asking; a caller gets the cached
        // token at once.
        until(expires - std::time::Duration::from_secs(9)).await;
        let warned = logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("refreshing registry credentials failed") && l.contains(&repo));
        assert!(warned, "no failed refresh ahead of time was logged");
        // Callers, every 100 ms until a second before expiry, while the
        // refreshes keep failing and pausing.
        while std::time::SystemTime::now() + std::time::Duration::from_secs(1) < expires {
            let started = Instant::now();
            let stale = live.provider().registry_auth(None, Some(&scope)).await.expect("the cached token");
            assert!(started.elapsed() < std::time::Duration::from_millis(100), "waited {:?}", started.elapsed());
            assert_eq!(stale.unwrap().secret.expose(), first.secret.expose());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }

        until(expires).await;
        let err = live.provider().registry_auth(None, Some(&scope)).await.expect_err("expired: no stale token");
        assert_eq!(err.kind(), credhost::ErrorKind::Unavailable, "{err}");
    });
}
