//! `docker-credential-credhost` and `credhost docker-config`: a real registry
//! client (skopeo) pushing through the helper to the real registries, the
//! protocol's answers, the `[registries]` table and the on-disk cache.

use std::process::Command;

use credhost_e2e::*;

const NOT_FOUND: &str = "credentials not found in native keychain";

fn registry_settings(svc: &Services, registry_var: &str, auth: &str, extra: &str) -> String {
    format!(
        "registry = {{ url = \"http://{}\", auth = \"{auth}\", username_env = \"REG_USER\", password_env = \"REG_PASS\"{extra} }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n",
        svc.var(registry_var)
    )
}

/// The environment every helper test shares: registry credentials, the
/// configuration the helper reads, and private config and cache homes.
fn helper_env(ws: &mut Workspace, svc: &Services) {
    ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    ws.set_env("CREDHOST_CONFIG", ws.path("plugins.toml").to_str().unwrap());
    ws.set_env("XDG_CACHE_HOME", ws.path("xdg-cache").to_str().unwrap());
    ws.set_env("XDG_CONFIG_HOME", ws.path("xdg-config").to_str().unwrap());
}

/// The local plugin on one registry, plus `tables` (TOML appended to the file).
fn local_ws(svc: &Services, registry_var: &str, auth: &str, extra: &str, tables: &str) -> Workspace {
    let mut ws = Workspace::local(&registry_settings(svc, registry_var, auth, extra));
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&format!("{text}\n{tables}"));
    helper_env(&mut ws, svc);
    ws
}

/// One configuration serving three registries: the token-auth registry (local
/// plugin), moto's ECR host (aws plugin) and the htpasswd registry, where
/// user AWS has moto's password, mapped to the aws plugin by [registries].
fn combined_ws(svc: &Services, tables: &str) -> Workspace {
    let mut ws = Workspace::aws(svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&format!(
        "{text}\n[plugins.local.settings]\n{}\n[registries]\n\"{}\" = \"aws\"\n{tables}",
        registry_settings(svc, "CREDHOST_TEST_REGISTRY_TOKEN", "token", ""),
        svc.var("CREDHOST_TEST_REGISTRY_BASIC"),
    ));
    helper_env(&mut ws, svc);
    ws
}

/// Runs `docker-credential-credhost ARGS` with `stdin`.
fn helper(ws: &Workspace, args: &[&str], stdin: &str) -> Run {
    ws.helper(args, stdin.as_bytes())
}

fn get(ws: &Workspace, server: &str) -> serde_json::Value {
    let out = helper(ws, &["get"], &format!("{server}\n")).ok();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Puts a wrapper named docker-credential-credhost first on PATH that logs
/// each call to `helper-calls.log` and runs the real helper: proof that the
/// client used the helper. Returns the log's path.
fn counting_helper(ws: &mut Workspace) -> std::path::PathBuf {
    let bin = ws.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = ws.path("helper-calls.log");
    let script = bin.join("docker-credential-credhost");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread -r server || true\necho \"$1 $server\" >> '{}'\nprintf '%s\\n' \"$server\" | exec '{}' \"$@\"\n",
            log.display(),
            artifact("docker-credential-credhost").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    ws.set_env("PATH", &format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()));
    log
}

/// Pushes a small OCI image with skopeo, credentials only from `authfile`.
fn skopeo_push(ws: &Workspace, authfile: &str, registry: &str, repo: &str) {
    let layout = oci_layout(ws);
    let out = ws
        .program("skopeo", &["copy", "--dest-tls-verify=false", "--dest-authfile", authfile])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{registry}/{repo}:v1"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo push to {registry}/{repo} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A repository (or scope) name no other test uses.
fn unique_repo(prefix: &str) -> String {
    unique(prefix).trim_end_matches(".zip").to_owned()
}

/// Tokens the token server issued for requests naming `marker` in a scope.
fn tokens_issued(svc: &Services, marker: &str) -> usize {
    let log = std::fs::read_to_string(svc.var("CREDHOST_TEST_TOKEN_LOG")).unwrap();
    log.lines().filter(|l| l.contains("token-issued") && l.contains(marker)).count()
}

/// Whether the registry's log shows `user` authenticated for requests to `repo`.
fn registry_saw_user(svc: &Services, name: &str, user: &str, repo: &str) -> bool {
    let log = std::path::Path::new(&svc.var("CREDHOST_TEST_SERVICES_DIR")).join(name).join(format!("{name}.log"));
    let text = std::fs::read_to_string(&log).unwrap();
    text.lines().any(|l| l.contains(&format!("auth.user.name={user} ")) && l.contains(&format!("/v2/{repo}/")))
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn skopeo_pushes_through_the_helper_to_the_token_registry_and_to_ecr_on_htpasswd() {
    let svc = Services::get();
    let mut ws = combined_ws(&svc, "");
    let token_reg = svc.var("CREDHOST_TEST_REGISTRY_TOKEN");
    let basic_reg = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    ws.run(&["docker-config", "-o", "auth.json"]).ok();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("auth.json")).unwrap()).unwrap();
    for host in [token_reg.as_str(), basic_reg.as_str(), AWS_REGISTRY] {
        assert_eq!(config["credHelpers"][host], "credhost", "{config}");
    }
    assert!(config.get("auths").is_none(), "{config}");
    assert_eq!(mode(&ws.path("auth.json")), 0o600);

    let calls = counting_helper(&mut ws);
    let token_repo = unique_repo("helper-token");
    skopeo_push(&ws, "auth.json", &token_reg, &token_repo);
    let ecr_repo = unique_repo("helper-ecr");
    skopeo_push(&ws, "auth.json", &basic_reg, &ecr_repo);

    let calls = std::fs::read_to_string(calls).unwrap();
    assert!(calls.lines().any(|l| l == format!("get {token_reg}")), "helper not asked for {token_reg}: {calls}");
    assert!(calls.lines().any(|l| l == format!("get {basic_reg}")), "helper not asked for {basic_reg}: {calls}");
    // skopeo exchanged the helper's password for a token scoped to the repository...
    assert!(tokens_issued(&svc, &format!("repository:{token_repo}:pull,push")) >= 1, "no token for {token_repo}");
    // ...and presented moto's ECR credentials (user AWS) to the htpasswd registry.
    assert!(
        registry_saw_user(&svc, "registry-basic", "AWS", &ecr_repo),
        "registry log shows no user AWS for {ecr_repo}"
    );
}

#[test]
fn skopeo_pushes_through_the_helper_to_the_htpasswd_registry() {
    let svc = Services::get();
    let mut ws = local_ws(&svc, "CREDHOST_TEST_REGISTRY_BASIC", "basic", "", "");
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    ws.run(&["docker-config", "--registry", &registry, "-o", "auth.json"]).ok();
    let calls = counting_helper(&mut ws);
    let repo = unique_repo("helper-basic");
    skopeo_push(&ws, "auth.json", &registry, &repo);
    let calls = std::fs::read_to_string(calls).unwrap();
    assert!(calls.lines().any(|l| l == format!("get {registry}")), "{calls}");
    assert!(registry_saw_user(&svc, "registry-basic", &svc.var("CREDHOST_TEST_REGISTRY_USER"), &repo));
}

#[test]
fn static_docker_config_holds_the_current_credentials() {
    let svc = Services::get();
    let ws = local_ws(&svc, "CREDHOST_TEST_REGISTRY_BASIC", "basic", "", "");
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    std::fs::write(
        ws.path("existing.json"),
        format!(
            r#"{{"auths": {{"other.example": {{"auth": "b3RoZXI6eA=="}}}}, "credHelpers": {{"{registry}": "credhost", "gcr.io": "gcloud"}}, "psFormat": "table"}}"#
        ),
    )
    .unwrap();
    let err = ws.run(&["docker-config", "--static", "-o", "-"]).fails_with(2);
    assert!(err.contains("--static writes credentials"), "{err}");

    ws.run(&["docker-config", "--static", "--merge", "existing.json"]).ok();
    let path = ws.path("existing.json");
    assert_eq!(mode(&path), 0o600);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let auth = v["auths"][registry.as_str()]["auth"].as_str().expect("an auths entry");
    let decoded = Command::new("python3")
        .args(["-c", "import base64,sys; print(base64.b64decode(sys.argv[1]).decode())", auth])
        .output()
        .unwrap();
    let expected = format!("{}:{}", svc.var("CREDHOST_TEST_REGISTRY_USER"), svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    assert_eq!(String::from_utf8_lossy(&decoded.stdout).trim(), expected);
    // Other entries stay; the helper entry that would shadow the stored one goes.
    assert_eq!(v["auths"]["other.example"]["auth"], "b3RoZXI6eA==");
    assert_eq!(v["psFormat"], "table");
    assert_eq!(v["credHelpers"], serde_json::json!({"gcr.io": "gcloud"}));

    // A client that runs no helper pushes with the file alone.
    let repo = unique_repo("static-basic");
    skopeo_push(&ws, "existing.json", &registry, &repo);

    // An existing output is replaced only with --force.
    std::fs::write(ws.path("config.json"), "{}").unwrap();
    ws.run(&["docker-config"]).fails_with(7);
    ws.run(&["docker-config", "--force"]).ok();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ws.path("config.json")).unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"credHelpers": {registry.as_str(): "credhost"}}));
    let err = ws.run(&["docker-config", "--registry", "unknown.example", "-o", "x.json"]).fails_with(2);
    assert!(err.contains("no instance serves registry unknown.example"), "{err}");
}

#[test]
fn list_unknown_hosts_store_erase_and_version() {
    let svc = Services::get();
    let ws = combined_ws(&svc, "");
    let list: serde_json::Value = serde_json::from_str(&helper(&ws, &["list"], "").ok()).unwrap();
    assert_eq!(
        list,
        serde_json::json!({
            AWS_REGISTRY: "AWS",
            svc.var("CREDHOST_TEST_REGISTRY_BASIC"): "AWS",
            svc.var("CREDHOST_TEST_REGISTRY_TOKEN"): svc.var("CREDHOST_TEST_REGISTRY_USER"),
        })
    );

    for unknown in ["registry.example.com", "https://index.docker.io/v1/", "127.0.0.1:1"] {
        let run = helper(&ws, &["get"], unknown);
        assert_eq!((run.code(), run.stdout().trim()), (1, NOT_FOUND), "{unknown}: {}", run.stderr());
    }
    let run = helper(&ws, &["get"], "\n");
    assert_eq!((run.code(), run.stdout().trim()), (1, "no credentials server URL"));

    let store = helper(&ws, &["store"], r#"{"ServerURL":"127.0.0.1:1","Username":"u","Secret":"s"}"#);
    assert_eq!(store.code(), 1);
    assert!(store.stdout().starts_with("credhost does not store registry credentials"), "{}", store.stdout());
    assert_eq!(store.stdout().lines().count(), 1);
    let erase = helper(&ws, &["erase"], "127.0.0.1:1\n");
    assert_eq!(erase.code(), 1);
    assert!(erase.stdout().contains("nothing to erase"), "{}", erase.stdout());

    let version = helper(&ws, &["version"], "").ok();
    assert!(version.starts_with("docker-credential-credhost (credhost) "), "{version}");
    let run = helper(&ws, &[], "");
    assert_eq!(run.code(), 1);
    assert!(run.stdout().starts_with("usage: docker-credential-credhost"), "{}", run.stdout());
    let run = helper(&ws, &["frobnicate"], "");
    assert!(run.code() == 1 && run.stdout().contains("unknown action `frobnicate`"), "{}", run.stdout());
}

#[test]
fn wildcard_and_exact_mappings() {
    let svc = Services::get();
    let ws = combined_ws(
        &svc,
        "\"*.registry.test\" = \"local\"\n\"*.*.deep.test\" = \"local\"\n\"pinned.registry.test\" = \"aws\"\n",
    );
    let user = svc.var("CREDHOST_TEST_REGISTRY_USER");
    let v = get(&ws, "a.registry.test");
    assert_eq!((v["ServerURL"].as_str(), v["Username"].as_str()), (Some("a.registry.test"), Some(user.as_str())));
    assert_eq!(v["Secret"], svc.var("CREDHOST_TEST_REGISTRY_PASSWORD").as_str());
    // The server is echoed as the client gave it; matching ignores scheme, path and case.
    let v = get(&ws, "https://A.Registry.test/v2/");
    assert_eq!(v["ServerURL"], "https://A.Registry.test/v2/");
    assert_eq!(v["Username"], user.as_str());
    // One label per `*.`, as the kubelet matches; what the wildcard matched
    // before at any depth is said on stderr.
    let run = helper(&ws, &["get"], "b.a.registry.test");
    assert_eq!((run.code(), run.stdout().trim()), (1, NOT_FOUND));
    assert!(
        run.stderr().contains("`*.registry.test` no longer matches b.a.registry.test")
            && run.stderr().contains("\"*.*.registry.test\""),
        "{}",
        run.stderr()
    );
    assert_eq!(get(&ws, "b.a.deep.test")["Username"], user.as_str());
    // An exact entry wins over the wildcard; the bare domain is no match.
    assert_eq!(get(&ws, "pinned.registry.test")["Username"], "AWS");
    let run = helper(&ws, &["get"], "registry.test");
    assert_eq!((run.code(), run.stdout().trim()), (1, NOT_FOUND));
    // config.json cannot hold a wildcard: docker-config says so.
    let run = ws.run(&["docker-config", "-o", "auth.json"]);
    run.ok();
    assert!(run.stderr().contains("`*.registry.test` is a wildcard"), "{}", run.stderr());
}

#[test]
fn registries_table_is_strict_and_located() {
    let svc = Services::get();
    let ws = local_ws(&svc, "CREDHOST_TEST_REGISTRY_BASIC", "basic", "", "[registries]\n\"ecr.example\" = \"gpc\"\n");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let line = text.lines().position(|l| l.starts_with("\"ecr.example\"")).unwrap() + 1;
    let run = helper(&ws, &["get"], "ecr.example");
    assert_eq!(run.code(), 1);
    let out = run.stdout();
    assert!(
        out.contains(&format!(
            "plugins.toml:{line}: registries: `ecr.example` names unknown instance `gpc`; known instances: local"
        )),
        "{out}"
    );
    let err = ws.run(&["check"]).fails_with(2);
    assert!(err.contains(&format!("plugins.toml:{line}: registries:")), "{err}");

    ws.write_config(&text.replace(
        "[registries]\n\"ecr.example\" = \"gpc\"\n",
        "[credential_helper]\ncache = true\ncahce_dir = \"x\"\n",
    ));
    let err = ws.run(&["check"]).fails_with(2);
    assert!(err.contains("unknown field `cahce_dir`"), "{err}");
}

#[test]
fn one_helper_process_fetches_once_for_every_host_of_a_plugin() {
    let svc = Services::get();
    let scope = format!("repository:{}:pull", unique_repo("inproc"));
    let ws = local_ws(
        &svc,
        "CREDHOST_TEST_REGISTRY_TOKEN",
        "token",
        &format!(", scope = \"{scope}\""),
        "[registries]\n\"mirror-a.registry.test\" = \"local\"\n\"mirror-b.registry.test\" = \"local\"\n",
    );
    let list: serde_json::Value = serde_json::from_str(&helper(&ws, &["list"], "").ok()).unwrap();
    assert_eq!(list.as_object().unwrap().len(), 3, "{list}");
    // Three registries, one plugin: the host's token cache made it one request.
    assert_eq!(tokens_issued(&svc, &scope), 1);
}

#[test]
fn disk_cache_is_off_by_default() {
    let svc = Services::get();
    let scope = format!("repository:{}:pull", unique_repo("nocache"));
    let ws = local_ws(&svc, "CREDHOST_TEST_REGISTRY_TOKEN", "token", &format!(", scope = \"{scope}\""), "");
    let registry = svc.var("CREDHOST_TEST_REGISTRY_TOKEN");
    get(&ws, &registry);
    get(&ws, &registry);
    assert_eq!(tokens_issued(&svc, &scope), 2, "each helper run asks the plugin");
    assert!(!ws.path("xdg-cache").exists(), "nothing written without cache = true");
}

#[test]
fn disk_cache_is_private_saves_calls_and_honours_expiry_and_identity() {
    let svc = Services::get();
    let scope = format!("repository:{}:pull", unique_repo("cache"));
    let mut ws = local_ws(
        &svc,
        "CREDHOST_TEST_REGISTRY_TOKEN",
        "token",
        &format!(", scope = \"{scope}\""),
        "[credential_helper]\ncache = true\n",
    );
    let registry = svc.var("CREDHOST_TEST_REGISTRY_TOKEN");
    let first = get(&ws, &registry);
    let second = get(&ws, &registry);
    assert_eq!(first, second);
    assert_eq!(tokens_issued(&svc, &scope), 1, "the second run was served from the cache");

    // The default place, private.
    let dir = ws.path("xdg-cache/credhost/registry-auth");
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(mode(file), 0o600);

    // An entry past its use-by time is not used, and is replaced.
    let mut entry: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(entry["use_until"].as_i64().unwrap() > now);
    entry["use_until"] = (now - 1).into();
    std::fs::write(file, entry.to_string()).unwrap();
    get(&ws, &registry);
    assert_eq!(tokens_issued(&svc, &scope), 2, "an expired entry was served");
    let entry: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(entry["use_until"].as_i64().unwrap() > now);

    // Another identity (here: another password) never gets this entry.
    ws.set_env("REG_PASS", "not-the-password");
    let run = helper(&ws, &["get"], &registry);
    assert_eq!(run.code(), 1, "{}", run.stdout());
    assert!(run.stdout().contains("rejected"), "{}", run.stdout());
    assert!(!run.stdout().contains("not-the-password"));
}

#[test]
fn expired_credentials_never_reach_the_disk_cache() {
    let svc = Services::get();
    let ws = combined_ws(&svc, "[credential_helper]\ncache = true\ncache_dir = \"helper-cache\"\n");
    // moto's ECR tokens expired in 2015: handed out, never stored.
    assert_eq!(get(&ws, AWS_REGISTRY)["Username"], "AWS");
    assert_eq!(get(&ws, &svc.var("CREDHOST_TEST_REGISTRY_BASIC"))["Username"], "AWS");
    let dir = ws.path("helper-cache");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    // A cache directory others can read is refused; credentials still flow.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = helper(&ws, &["get"], &svc.var("CREDHOST_TEST_REGISTRY_TOKEN"));
    assert_eq!(run.code(), 0, "{}", run.stdout());
    assert!(run.stderr().contains("has mode 755"), "{}", run.stderr());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
