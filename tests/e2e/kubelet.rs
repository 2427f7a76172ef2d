//! `credhost kubelet-provider`, run as the kubelet runs an image credential
//! provider: exec'd with its config's args and env, a request on stdin, one
//! minute to answer, the answer decoded strictly against the v1 types and
//! its credentials used by a real client (skopeo) to pull.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use credhost_e2e::*;
use serde::Deserialize;

/// The v1 response as the kubelet decodes it: unknown fields are errors.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Response {
    api_version: String,
    kind: String,
    cache_key_type: String,
    cache_duration: Option<String>,
    auth: Option<BTreeMap<String, AuthConfig>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct AuthConfig {
    username: String,
    password: String,
}

/// Seconds of a Go duration string as the kubelet's `metav1.Duration` reads it.
fn go_seconds(d: &str) -> u64 {
    if d == "0" {
        return 0;
    }
    let (mut total, mut number) = (0u64, String::new());
    for c in d.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().unwrap_or_else(|_| panic!("not a Go duration: {d}"));
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => panic!("not a Go duration: {d}"),
        };
    }
    assert!(number.is_empty(), "not a Go duration: {d}");
    total
}

/// Runs `program args` as the kubelet does, with `request` on stdin and the
/// config's env (`CREDHOST_CONFIG`), within its one minute.
fn exec(ws: &Workspace, program: &str, args: &[&str], request: &serde_json::Value) -> (i32, String, String) {
    let program = if program == "credhost" { artifact("credhost") } else { std::path::PathBuf::from(program) };
    let mut cmd = ws.program(&program, args);
    cmd.env("CREDHOST_CONFIG", ws.path("plugins.toml"));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn the provider");
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60), "the kubelet gives a provider one minute");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn request(image: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest", "image": image})
}

/// The answer for `image`, decoded strictly; the kubelet's checks applied.
fn answer(ws: &Workspace, program: &str, args: &[&str], image: &str) -> Response {
    let (code, stdout, stderr) = exec(ws, program, args, &request(image));
    assert_eq!(code, 0, "{stderr}");
    let r: Response = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not a v1 response ({e}): {stdout}"));
    assert_eq!(r.api_version, "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!((r.kind.as_str(), r.cache_key_type.as_str()), ("CredentialProviderResponse", "Registry"));
    r
}

/// Pushes an image with `creds`, then pulls it through the kubelet's answer.
fn pull_with_answer(ws: &Workspace, registry: &str, push_creds: &str, program: &str, args: &[&str]) -> Response {
    let repo = unique("kubelet").replace(".zip", "");
    let out = skopeo_push(ws, registry, &repo, &["--dest-creds", push_creds]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let image = format!("{registry}/{repo}:v1");
    let r = answer(ws, program, args, &image);
    let auth = r.auth.as_ref().expect("credentials for a served registry");
    // The kubelet keeps the entry whose key matches the image, by its rules.
    let (_, creds) = auth.iter().find(|(k, _)| image.starts_with(k.as_str())).expect("an entry for the image");
    let dest = ws.path(&format!("pulled-{repo}"));
    let pulled = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--src-creds"])
        .arg(format!("{}:{}", creds.username, creds.password))
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:v1", dest.display()))
        .output()
        .unwrap();
    assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));
    // Anonymous pulls are refused: the answer's credentials did it.
    let anonymous = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(!anonymous.status.success(), "the registry let an anonymous client read {image}");
    r
}

#[test]
fn htpasswd_registry_credentials_pull_for_the_kubelet() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let creds = format!("{}:{}", svc.var("CREDHOST_TEST_REGISTRY_USER"), svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let r = pull_with_answer(&ws, &registry, &creds, "credhost", &["kubelet-provider"]);
    // A password with no expiry: not cached by credhost's say.
    assert_eq!(r.cache_duration.as_deref(), Some("0"));
    // The same from the docker helper's program, which a kubelet may be pointed at.
    let helper = artifact("docker-credential-credhost");
    let r = answer(&ws, helper.to_str().unwrap(), &[], &format!("{registry}/x:v1"));
    assert!(r.auth.unwrap().contains_key(&registry));
}

#[test]
fn token_auth_registry_credentials_pull_for_the_kubelet() {
    let svc = Services::get();
    let ws = Workspace::local_token(&svc);
    let creds = format!("{}:{}", svc.var("CREDHOST_TEST_REGISTRY_USER"), svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    pull_with_answer(&ws, &svc.var("CREDHOST_TEST_REGISTRY_TOKEN"), &creds, "credhost", &["kubelet-provider"]);
}

/// ECR through the aws plugin on moto: its token (`AWS:password`) is the
/// htpasswd registry's user `AWS`, which the aws instance serves here; moto's
/// tokens carry an expiry already past, so the kubelet must not cache.
#[test]
fn ecr_tokens_pull_for_the_kubelet_and_are_not_cached_when_expired() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let ws = Workspace::aws(&svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&text.replace(
        "[plugins.aws.settings]",
        &format!("[plugins.aws]\nregistries = [\"{registry}\"]\n\n[plugins.aws.settings]"),
    ));
    let creds = format!("AWS:{}", svc.var("CREDHOST_TEST_AWS_REGISTRY_PASSWORD"));
    let r = pull_with_answer(&ws, &registry, &creds, "credhost", &["kubelet-provider"]);
    assert_eq!(r.cache_duration.as_deref(), Some("0"), "moto's token expired in 2015");
    assert_eq!(r.auth.unwrap()[&registry].username, "AWS");
}

#[test]
fn images_no_instance_serves_get_no_auth_and_bad_requests_one_line() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    for image in ["unknown.example.com/app:v1", "busybox", &format!("{}9/app", svc.var("CREDHOST_TEST_REGISTRY_BASIC"))]
    {
        let r = answer(&ws, "credhost", &["kubelet-provider"], image);
        assert!(r.auth.is_none(), "{image}: {r:?}");
        assert_eq!(r.cache_duration.as_deref().map(go_seconds), Some(0));
    }
    for (bad, says) in [
        (
            serde_json::json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1beta1", "kind": "CredentialProviderRequest", "image": "a/b"}),
            "apiVersion",
        ),
        (
            serde_json::json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest"}),
            "image",
        ),
    ] {
        let (code, stdout, stderr) = exec(&ws, "credhost", &["kubelet-provider"], &bad);
        assert_ne!(code, 0);
        assert!(stdout.is_empty() && stderr.lines().count() == 1 && stderr.contains(says), "{stderr}");
    }
    // Service-account mode: the workload's credentials cannot be made by
    // this instance; the node's are never handed out in their place.
    let mut req = request(&format!("{}/app:v1", svc.var("CREDHOST_TEST_REGISTRY_BASIC")));
    req["serviceAccountToken"] = "eyJhbGciOi.workload-token.sig".into();
    let (code, stdout, stderr) = exec(&ws, "credhost", &["kubelet-provider"], &req);
    assert_ne!(code, 0);
    assert!(stdout.is_empty() && stderr.contains("service-account"), "{stderr}");
    assert!(!stderr.contains("workload-token") && !stderr.contains(&svc.var("CREDHOST_TEST_REGISTRY_PASSWORD")));
}

#[test]
fn kubelet_config_lists_what_credhost_serves() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let yaml = ws.run(&["kubelet-config", "--default-cache-duration", "10m"]).ok();
    let v = serde_yaml_value(&svc, &yaml);
    assert_eq!(v["apiVersion"], "kubelet.config.k8s.io/v1");
    assert_eq!(v["kind"], "CredentialProviderConfig");
    let p = &v["providers"][0];
    assert_eq!(p["name"], "credhost");
    assert_eq!(p["matchImages"], serde_json::json!([svc.var("CREDHOST_TEST_REGISTRY_BASIC")]));
    assert_eq!(p["defaultCacheDuration"], "10m0s");
    assert_eq!(p["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(p["args"], serde_json::json!(["kubelet-provider"]));
    assert_eq!(p["env"][0]["name"], "CREDHOST_CONFIG");
    assert!(p["env"][0]["value"].as_str().unwrap().ends_with("/plugins.toml"));
}

/// YAML read by PyYAML (a real parser), as JSON.
fn serde_yaml_value(svc: &Services, yaml: &str) -> serde_json::Value {
    let out = python(svc, "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.argv[1])))", &[yaml]);
    serde_json::from_str(&out).unwrap()
}

/// The golden table (tests/kubelet-golden.json): every request answered
/// exactly as written there, for the `[registries]` it lists.
#[test]
fn golden_requests_get_their_responses() {
    let svc = Services::get();
    let text = std::fs::read_to_string(repo_root().join("tests/kubelet-golden.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ws = Workspace::local_basic(&svc);
    let mut config = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    config.push_str("\n[registries]\n");
    for (pattern, instance) in golden["registries"].as_object().unwrap() {
        config.push_str(&format!("{pattern:?} = {:?}\n", instance.as_str().unwrap()));
    }
    ws.write_config(&config);
    let basic = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let (host, port) = basic.rsplit_once(':').unwrap();
    let off = format!("{host}:{}", port.parse::<u16>().unwrap() + 9);
    let (user, password) = (svc.var("CREDHOST_TEST_REGISTRY_USER"), svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    let fill = |v: &serde_json::Value| -> serde_json::Value {
        let text = v
            .to_string()
            .replace("{basic_port_off}", &off)
            .replace("{basic}", &basic)
            .replace("{user}", &user)
            .replace("{password}", &password);
        serde_json::from_str(&text).unwrap()
    };
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for case in cases {
        let (code, stdout, stderr) = exec(&ws, "credhost", &["kubelet-provider"], &fill(&case["request"]));
        assert_eq!(code, 0, "{}: {stderr}", case["what"]);
        let got: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(got, fill(&case["response"]), "{}", case["what"]);
        // And strictly as the kubelet decodes it.
        let _: Response = serde_json::from_str(&stdout).unwrap();
    }
}
