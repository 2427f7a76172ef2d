//! Registry credentials from the local plugin, used by a real client (skopeo)
//! against real Distribution registries.

use std::process::Command;

use credhost_e2e::*;

fn decode_registry_token(token: &str) -> (String, String) {
    let out = Command::new("python3")
        .args(["-c", "import base64,sys; print(base64.b64decode(sys.argv[1]).decode())", token])
        .output()
        .expect("python3");
    let text = String::from_utf8(out.stdout).unwrap();
    let (u, p) = text.trim_end().split_once(':').expect("user:secret");
    (u.to_owned(), p.to_owned())
}

/// Local plugin with fs storage and a registry using `auth` ("basic" or "token").
fn auth_ws(svc: &Services, registry_var: &str, auth: &str, password: &str) -> Workspace {
    let mut ws = Workspace::local(&format!(
        "registry = {{ url = \"http://{}\", auth = \"{auth}\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}",
        svc.var(registry_var)
    ));
    ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    ws.set_env("REG_PASS", password);
    ws
}

fn basic_ws(svc: &Services, password: &str) -> Workspace {
    auth_ws(svc, "CREDHOST_TEST_REGISTRY_BASIC", "basic", password)
}

fn token_ws(svc: &Services, password: &str) -> Workspace {
    auth_ws(svc, "CREDHOST_TEST_REGISTRY_TOKEN", "token", password)
}

#[test]
fn open_registry_needs_no_token() {
    let svc = Services::get();
    let ws = Workspace::local_fs(&svc.var("CREDHOST_TEST_REGISTRY_OPEN"));
    assert_eq!(ws.run(&["token"]).ok(), "");
    assert_eq!(ws.run(&["token", "--format", "json"]).ok().trim(), "null");
    let out = skopeo_push(&ws, &svc.var("CREDHOST_TEST_REGISTRY_OPEN"), "open-demo", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn htpasswd_registry_token_lets_skopeo_push() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let ws = basic_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let token = ws.run(&["token"]).ok();
    let (user, pass) = decode_registry_token(token.trim());
    assert_eq!(user, svc.var("CREDHOST_TEST_REGISTRY_USER"));

    let json: serde_json::Value = serde_json::from_str(&ws.run(&["token", "--format", "json"]).ok()).unwrap();
    assert_eq!(json["server"], registry.as_str());
    assert_eq!(json["username"], user.as_str());
    assert_eq!(json["password"], pass.as_str());
    assert!(json["expires_at"].is_null());

    let creds = format!("{user}:{pass}");
    let out = skopeo_push(&ws, &registry, "basic-demo", &["--dest-creds", &creds]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // REGISTRY_TOKEN is what a build job gets, redacted unless asked for.
    let env = ws.run(&["credentials"]).ok();
    assert!(env.contains("REGISTRY_TOKEN=<redacted>"), "{env}");
    assert!(!env.contains(&pass));
    let env = ws.run(&["credentials", "--show-secrets"]).ok();
    assert!(env.contains(&format!("REGISTRY_TOKEN={}", token.trim())), "{env}");
}

#[test]
fn htpasswd_wrong_password_is_an_auth_failure() {
    let svc = Services::get();
    let ws = basic_ws(&svc, "not-the-password");
    let err = ws.run(&["token"]).fails_with(4);
    assert!(err.contains("rejected"), "{err}");
    assert!(!err.contains("not-the-password"), "secret leaked: {err}");
    assert!(err.lines().count() == 1, "one line: {err}");
}

#[test]
fn token_auth_registry_token_lets_skopeo_push() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_TOKEN");
    let ws = token_ws(&svc, &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let out = ws.run(&["token", "--repository", "token-demo", "--format", "json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["server"], registry.as_str());
    let token = json["password"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let expires = json["expires_at"].as_i64().expect("expiry");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(expires > now && expires <= now + 3600, "expires_at {expires} vs now {now}");

    let out = skopeo_push(&ws, &registry, "token-demo", &["--dest-registry-token", &token]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The token is scoped: another repository is refused.
    let out = skopeo_push(&ws, &registry, "other-repo", &["--dest-registry-token", &token]);
    assert!(!out.status.success(), "a token for token-demo pushed to other-repo");

    // The token server saw the scope we asked for.
    let log = std::fs::read_to_string(svc.var("CREDHOST_TEST_TOKEN_LOG")).unwrap();
    assert!(log.contains("repository:token-demo:pull,push"), "token server log lacks the scope");
}

#[test]
fn token_auth_wrong_password_is_an_auth_failure() {
    let svc = Services::get();
    let ws = token_ws(&svc, "wrong-password");
    let err = ws.run(&["token", "--repository", "demo"]).fails_with(4);
    assert!(err.contains("rejected"), "{err}");
    assert!(!err.contains("wrong-password"));
    let run = ws.run(&["check"]);
    run.fails_with(6);
    assert!(run.stdout().contains("FAIL registry"), "{}", run.stdout());
}

#[test]
fn token_for_another_registry_is_refused() {
    let svc = Services::get();
    let ws = Workspace::local_fs(&svc.var("CREDHOST_TEST_REGISTRY_OPEN"));
    let err = ws.run(&["token", "--registry", "registry.example.com"]).fails_with(3);
    assert!(err.contains("registry.example.com"), "{err}");
    ws.run(&["token", "--registry", &format!("http://{}", svc.var("CREDHOST_TEST_REGISTRY_OPEN"))]).ok();
}
