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
    answer_to(ws, program, args, &request(image))
}

/// The answer to `req`, decoded strictly; the kubelet's checks applied.
fn answer_to(ws: &Workspace, program: &str, args: &[&str], req: &serde_json::Value) -> Response {
    let (code, stdout, stderr) = exec(ws, program, args, req);
    assert_eq!(code, 0, "{stderr}");
    let r: Response = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not a v1 response ({e}): {stdout}"));
    assert_eq!(r.api_version, "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!((r.kind.as_str(), r.cache_key_type.as_str()), ("CredentialProviderResponse", "Registry"));
    r
}

/// Pushes an image with `creds`, then pulls it through the kubelet's answer.
fn pull_with_answer(ws: &Workspace, registry: &str, push_creds: &str, program: &str, args: &[&str]) -> Response {
    pull_with_answer_to(ws, registry, push_creds, program, args, request)
}

/// [`pull_with_answer`] for the request `make` builds for the image.
fn pull_with_answer_to(
    ws: &Workspace,
    registry: &str,
    push_creds: &str,
    program: &str,
    args: &[&str],
    make: impl Fn(&str) -> serde_json::Value,
) -> Response {
    let repo = unique("kubelet").replace(".zip", "");
    let out = skopeo_push(ws, registry, &repo, &["--dest-creds", push_creds]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let image = format!("{registry}/{repo}:v1");
    let r = answer_to(ws, program, args, &make(&image));
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

// ---- service-account mode ----------------------------------------------

/// A request in service-account mode: the pod's token and the annotations
/// the provider's config passes.
fn sa_request(image: &str, token: &str, annotations: serde_json::Value) -> serde_json::Value {
    let mut r = request(image);
    r["serviceAccountToken"] = token.into();
    r["serviceAccountAnnotations"] = annotations;
    r
}

/// A projected token of service account `team/builder`, signed by the test
/// issuer (`extra`: other audience, key, issuer, expiry).
fn builder_token(svc: &Services, extra: &[&str]) -> String {
    oidc_token(svc, &[&["--namespace", "team", "--service-account", "builder"][..], extra].concat())
}

/// A refusal: non-zero, nothing on stdout, one line on stderr saying
/// `says`, and neither the token nor `secrets` in it.
fn refused(ws: &Workspace, args: &[&str], req: &serde_json::Value, says: &str, secrets: &[&str]) -> String {
    let (code, stdout, stderr) = exec(ws, "credhost", args, req);
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(says), "wanted {says:?} in: {stderr}");
    let token = req["serviceAccountToken"].as_str().unwrap_or_default();
    for s in secrets.iter().copied().chain([token]).filter(|s| !s.is_empty()) {
        assert!(!stderr.contains(s), "a secret in: {stderr}");
        // Nor the token's signature on its own.
        if let Some(sig) = s.rsplit('.').next().filter(|sig| sig.len() > 16) {
            assert!(!stderr.contains(sig), "a token's signature in: {stderr}");
        }
    }
    stderr
}

/// local has no workload identity (a self-hosted token server cannot check
/// a cluster's tokens): without requireServiceAccount a workload's request
/// gets the node's credentials, as before; with it, a refusal, never the
/// node's credentials; a request the kubelet could not have sent (no token
/// under requireServiceAccount, a token that is not a service account's)
/// is refused too.
#[test]
fn local_instances_answer_workloads_with_the_nodes_credentials_unless_one_is_required() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let password = svc.var("CREDHOST_TEST_REGISTRY_PASSWORD");
    let image = format!("{registry}/app:v1");
    let token = builder_token(&svc, &[]);
    let r = answer_to(&ws, "credhost", &["kubelet-provider"], &sa_request(&image, &token, serde_json::json!({})));
    assert_eq!(r.auth.unwrap()[&registry].password, password);

    let strict = ["kubelet-provider", "--require-service-account"];
    let err = refused(
        &ws,
        &strict,
        &sa_request(&image, &token, serde_json::json!({})),
        "requireServiceAccount",
        &[&password],
    );
    assert!(err.contains("plugin `local`") && err.contains("does not offer it"), "{err}");
    refused(&ws, &strict, &request(&image), "carries no service-account token", &[&password]);
    // An image no instance serves is still "nothing for this image".
    let other =
        answer_to(&ws, "credhost", &strict, &sa_request("unknown.example.com/app", &token, serde_json::json!({})));
    assert!(other.auth.is_none());

    for (bad, says) in [
        ("not-a-jwt-but-a-secret-value".to_owned(), "is not a JWT"),
        (oidc_token(&svc, &["--sub", "user:alice"]), "not a service account's"),
        (format!("a.{}.c", "!".repeat(20)), "not base64url"),
    ] {
        refused(&ws, &["kubelet-provider"], &sa_request(&image, &bad, serde_json::json!({})), says, &[&password]);
    }
}

/// aws: STS AssumeRoleWithWebIdentity with the pod's token, as the role its
/// service account names, session `NAMESPACE.SERVICEACCOUNT`, an inline
/// policy pulling only the annotated repositories; the ECR token of that
/// session pulls. moto accepts any token (it verifies nothing) and only
/// records the session: its role, name and policy are checked here, the
/// token's verification on SeaweedFS (next test).
#[test]
fn aws_workloads_pull_as_the_role_their_service_account_names() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let moto = svc.var("CREDHOST_TEST_MOTO_STS_ENDPOINT");
    let ws = Workspace::aws(&svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), &format!("sts_endpoint_url = \"{moto}\""));
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&text.replace(
        "[plugins.aws.settings]",
        &format!("[plugins.aws]\nregistries = [\"{registry}\"]\n\n[plugins.aws.settings]"),
    ));
    let token = builder_token(&svc, &[]);
    let image = format!("{registry}/app:v1");

    // No role: neither the annotation nor kubelet_role_arn.
    let err = refused(
        &ws,
        &["kubelet-provider"],
        &sa_request(&image, &token, serde_json::json!({})),
        "kubelet_role_arn",
        &[],
    );
    assert!(err.contains("credhost.io/role-arn") && err.contains("team/builder"), "{err}");
    let annotations =
        |role: &str| serde_json::json!({"credhost.io/role-arn": role, "credhost.io/pull": "team/app, base"});
    refused(
        &ws,
        &["kubelet-provider"],
        &sa_request(&image, &token, annotations("arn:aws:iam::1:user/x")),
        "not an IAM role ARN",
        &[],
    );

    let role = "arn:aws:iam::123456789012:role/puller";
    let creds = format!("AWS:{}", svc.var("CREDHOST_TEST_AWS_REGISTRY_PASSWORD"));
    let r = pull_with_answer_to(
        &ws,
        &registry,
        &creds,
        "credhost",
        &["kubelet-provider", "--require-service-account"],
        |image| sa_request(image, &token, annotations(role)),
    );
    assert_eq!(r.auth.unwrap()[&registry].username, "AWS");
    assert_eq!(r.cache_duration.as_deref(), Some("0"), "moto's ECR token expired in 2015");

    let sessions = moto_state(&svc)["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default();
    let session = sessions.iter().rev().find(|s| s["session_name"] == "team.builder").expect("a session team.builder");
    assert_eq!(session["role_arn"], role);
    let policy: serde_json::Value =
        serde_json::from_str(session["policy"].as_str().expect("a session policy")).unwrap();
    let text = policy.to_string();
    for repo in ["team/app", "base"] {
        assert!(text.contains(&format!("arn:aws:ecr:us-east-1:123456789012:repository/{repo}")), "{text}");
    }
    assert!(!text.contains("PutImage") && !text.contains("s3:"), "pulls only: {text}");

    // Without the pull annotation: the role's own rights, no session policy.
    let plain = serde_json::json!({"credhost.io/role-arn": role});
    let other = oidc_token(&svc, &["--namespace", "ci", "--service-account", "runner"]);
    answer_to(&ws, "credhost", &["kubelet-provider"], &sa_request(&image, &other, plain));
    let sessions = moto_state(&svc)["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default();
    let session = sessions.iter().rev().find(|s| s["session_name"] == "ci.runner").expect("a session ci.runner");
    assert!(session["policy"].is_null(), "{session}");
}

/// aws on SeaweedFS's STS, which verifies web-identity tokens against its
/// OIDC provider (the test issuer): the issuer's token is accepted; a token
/// for another audience, from another issuer, signed by another key, or
/// expired is refused, and the refusal is the answer (never the node's
/// credentials).
#[test]
fn aws_workloads_tokens_are_verified_by_the_platform() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_BASIC");
    let sts = svc.var("CREDHOST_TEST_STS_S3_ENDPOINT");
    let ws = Workspace::aws(
        &svc,
        &svc.var("CREDHOST_TEST_S3_ENDPOINT"),
        &format!("sts_endpoint_url = \"{sts}\"\nkubelet_role_arn = \"{}\"", svc.var("CREDHOST_TEST_STS_WEB_ROLE_ARN")),
    );
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&text.replace(
        "[plugins.aws.settings]",
        &format!("[plugins.aws]\nregistries = [\"{registry}\"]\n\n[plugins.aws.settings]"),
    ));
    let image = format!("{registry}/app:v1");
    let node_password = svc.var("CREDHOST_TEST_AWS_REGISTRY_PASSWORD");
    let good = builder_token(&svc, &[]);
    let r = answer_to(&ws, "credhost", &["kubelet-provider"], &sa_request(&image, &good, serde_json::json!({})));
    assert_eq!(r.auth.unwrap()[&registry].username, "AWS");

    let stranger = svc.var("CREDHOST_TEST_OIDC_STRANGER_KEY");
    for (args, says) in [
        (vec!["--aud", "https://kubernetes.default.svc"], "audience"),
        (vec!["--iss", "https://issuer.example.com"], "AccessDenied"),
        (vec!["--key", stranger.as_str()], "signature"),
        (vec!["--exp-in", "-120"], "expired"),
    ] {
        let token = builder_token(&svc, &args);
        let req = sa_request(&image, &token, serde_json::json!({}));
        let err = refused(&ws, &["kubelet-provider"], &req, "AssumeRoleWithWebIdentity", &[&node_password]);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// gcp: the pod's token exchanged at STS through the pool provider
/// (`kubelet_audience`), which checks the token's signature, issuer and
/// audience; then IAM Credentials mints a token of the annotated Google
/// service account, asked for by the federated principal (never the
/// node's account).
#[test]
fn gcp_workloads_exchange_their_token_through_the_pool_provider() {
    use credhost_e2e::gcp;
    let svc = Services::get();
    let (ws, key) = gcp::keyed_ws(&svc, 3600);
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let (iam, sts) = (svc.var("CREDHOST_TEST_GCP_IAM_ENDPOINT"), svc.var("CREDHOST_TEST_GCP_STS_ENDPOINT"));
    let provider = svc.var("CREDHOST_TEST_GCP_WORKLOAD_PROVIDER");
    let auth = svc.var("CREDHOST_TEST_GCP_AUTH");
    let account = format!("puller@{}.iam.gserviceaccount.com", svc.var("CREDHOST_TEST_GCP_PROJECT"));
    let image = "us-central1-docker.pkg.dev/proj/repo/app:v1";
    let aud = format!("https://iam.googleapis.com/{provider}");
    let token = builder_token(&svc, &["--aud", &aud]);
    let annotations = serde_json::json!({"credhost.io/service-account": account});
    let req = sa_request(image, &token, annotations.clone());

    ws.write_config(&format!("{text}iam_endpoint = \"{iam}\"\nsts_endpoint = \"{sts}\"\n"));
    refused(&ws, &["kubelet-provider"], &req, "kubelet_audience", &[]);
    ws.write_config(&format!(
        "{text}iam_endpoint = \"{iam}\"\nsts_endpoint = \"{sts}\"\nkubelet_audience = \"{provider}\"\n"
    ));
    let err = refused(
        &ws,
        &["kubelet-provider"],
        &sa_request(image, &token, serde_json::json!({})),
        "credhost.io/service-account",
        &[],
    );
    assert!(err.contains("kubelet_service_account"), "{err}");

    let generated = |since: u64| gcp::control(&svc, "GET", &format!("{auth}/_test/generated?since={since}"), None);
    let exchanges = |since: u64| gcp::control(&svc, "GET", &format!("{auth}/_test/exchanges?since={since}"), None);
    let (gen_before, ex_before) = (generated(0)["next"].as_u64().unwrap(), exchanges(0)["next"].as_u64().unwrap());
    let r = answer_to(&ws, "credhost", &["kubelet-provider", "--require-service-account"], &req);
    let creds = &r.auth.as_ref().unwrap()["us-central1-docker.pkg.dev"];
    assert_eq!(creds.username, "oauth2accesstoken");
    assert_eq!(gcp::token_account(&svc, &creds.password).as_deref(), Some(account.as_str()));
    let secs = go_seconds(r.cache_duration.as_deref().unwrap());
    assert!((3000..3600).contains(&secs), "an hour's token less the margin: {secs}");

    let principal = format!(
        "principal://iam.googleapis.com/{}/subject/system:serviceaccount:team:builder",
        provider.rsplit_once("/providers/").unwrap().0
    );
    let ex = exchanges(ex_before)["exchanges"].as_array().cloned().unwrap_or_default();
    assert!(
        ex.iter().any(|e| e["kind"] == "federation" && e["status"] == 200 && e["principal"] == principal.as_str()),
        "{ex:?}"
    );
    let calls = generated(gen_before)["calls"].as_array().cloned().unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0]["target"].as_str(), calls[0]["caller"].as_str()),
        (Some(account.as_str()), Some(principal.as_str()))
    );
    assert_ne!(calls[0]["caller"], key["client_email"], "the node's account asked");

    let stranger = svc.var("CREDHOST_TEST_OIDC_STRANGER_KEY");
    for (args, says) in [
        (vec!["--aud", "sts.amazonaws.com"], "does not match the expected audience"),
        (vec!["--aud", aud.as_str(), "--iss", "https://issuer.example.com"], "issuer"),
        (vec!["--aud", aud.as_str(), "--key", stranger.as_str()], "signature"),
    ] {
        let bad = builder_token(&svc, &args);
        refused(&ws, &["kubelet-provider"], &sa_request(image, &bad, annotations.clone()), says, &[]);
    }
}

#[test]
fn kubelet_config_asks_for_service_account_tokens() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let yaml = ws
        .run(&[
            "kubelet-config",
            "--service-account-audience",
            "sts.amazonaws.com",
            "--require-service-account",
            "--required-annotation",
            "credhost.io/role-arn",
        ])
        .ok();
    let p = &serde_yaml_value(&svc, &yaml)["providers"][0];
    assert_eq!(p["args"], serde_json::json!(["kubelet-provider", "--require-service-account"]));
    let t = &p["tokenAttributes"];
    assert_eq!(t["serviceAccountTokenAudience"], "sts.amazonaws.com");
    assert_eq!(t["cacheType"], "ServiceAccount");
    assert_eq!(t["requireServiceAccount"], true);
    assert_eq!(t["requiredServiceAccountAnnotationKeys"], serde_json::json!(["credhost.io/role-arn"]));
    assert_eq!(
        t["optionalServiceAccountAnnotationKeys"],
        serde_json::json!(["credhost.io/pull", "credhost.io/service-account"])
    );

    let yaml = ws.run(&["kubelet-config", "--service-account-audience", "a", "--cache-type", "Token"]).ok();
    let p = &serde_yaml_value(&svc, &yaml)["providers"][0];
    assert_eq!(
        (p["tokenAttributes"]["cacheType"].as_str(), p["tokenAttributes"]["requireServiceAccount"].as_bool()),
        (Some("Token"), Some(false))
    );
    assert_eq!(p["args"], serde_json::json!(["kubelet-provider"]));

    let err = ws
        .run(&["kubelet-config", "--service-account-audience", "a", "--required-annotation", "Bad Key"])
        .fails_with(2);
    assert!(err.contains("not an annotation key"), "{err}");
    let err = ws.run(&["kubelet-config", "--cache-type", "Token"]).fails_with(2);
    assert!(err.contains("--service-account-audience"), "{err}");
}

/// A plugin (a test fixture) whose workload answers the host must not pass
/// on: the service-account token itself as the password is refused; the
/// kit's "unsupported" despite declaring workload identity counts as none
/// (the node's credentials without requireServiceAccount, a refusal with).
#[test]
fn workload_answers_the_host_must_not_pass_on() {
    use std::os::unix::fs::PermissionsExt;
    let svc = Services::get();
    let ws = Workspace::new();
    let dir = ws.path("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(artifact(&lib_file("fixture_workload")), dir.join(lib_file("credhost_workload"))).unwrap();
    let config = |answer: &str| {
        ws.write_config(&format!(
            "platform = \"workload\"\nplugin_dir = \"plugins\"\n\n[plugins.workload.settings]\nregistry = \"pass.example:5000\"\nanswer = \"{answer}\"\n"
        ))
    };
    let token = builder_token(&svc, &[]);
    let req = sa_request("pass.example:5000/app:v1", &token, serde_json::json!({}));
    let strict = ["kubelet-provider", "--require-service-account"];

    config("token");
    for args in [&strict[..], &["kubelet-provider"]] {
        refused(&ws, args, &req, "the service-account token itself", &["node-password"]);
    }

    config("unsupported");
    let r = answer_to(&ws, "credhost", &["kubelet-provider"], &req);
    assert_eq!(r.auth.unwrap()["pass.example:5000"].password, "node-password");
    refused(&ws, &strict, &req, "answers that it has no workload identity", &["node-password"]);
}
