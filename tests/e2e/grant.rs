//! `credhost grant`: what one build job needs, narrowed by servers that
//! enforce it (Distribution's token server, SeaweedFS's STS session
//! policies), and recorded exactly where a server only records (moto).

use std::collections::BTreeMap;

use credhost_e2e::*;

/// The entries of a `--format json` grant.
fn grant_json(ws: &Workspace, args: &[&str]) -> BTreeMap<String, String> {
    let mut all = vec!["grant", "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ws.run(&all).ok()).expect("grant --format json")
}

/// The claims of a JWT (its middle part).
fn jwt_claims(token: &str) -> serde_json::Value {
    let svc = Services::get();
    let text = python(
        &svc,
        "import base64,sys; p=sys.argv[1].split('.')[1]; print(base64.urlsafe_b64decode(p + '=' * (-len(p) % 4)).decode())",
        &[token],
    );
    serde_json::from_str(text.trim()).expect("JWT claims")
}

#[test]
fn a_grant_lasts_15_minutes_to_12_hours_and_names_checked_before_anything_is_issued() {
    let svc = Services::get();
    let ws = Workspace::local_token(&svc);
    let repo = unique("ttl-never-asked");
    for (ttl, word) in [("14m", "not 14m"), ("43201", "15 minutes to 12 hours"), ("0", "not 0s")] {
        let err = ws.run(&["grant", "--project", "projects/a.zip", "--repository", &repo, "--ttl", ttl]).fails_with(2);
        assert!(err.contains(word), "{ttl}: {err}");
    }
    for bad in ["Upper/Case", "a//b", "_lead"] {
        let err = ws.run(&["grant", "--project", "projects/a.zip", "--repository", bad]).fails_with(2);
        assert!(err.contains("is not a repository name"), "{bad}: {err}");
    }
    ws.run(&["grant", "--project", "no-slash"]).fails_with(2);
    // Nothing reached the token server for any of them.
    let log = std::fs::read_to_string(svc.var("CREDHOST_TEST_TOKEN_LOG")).unwrap();
    assert!(!log.contains(&repo), "a refused grant asked the token server");
}

#[test]
fn token_registry_grants_a_bearer_for_exactly_the_repositories() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_TOKEN");
    let ws = Workspace::local_token(&svc);
    let (repo, base) = (unique("granted"), unique("base"));
    let out = ws.run(&[
        "grant",
        "--project",
        "projects/app.zip",
        "--repository",
        &repo,
        "--pull",
        &base,
        "--format",
        "json",
        "--show-secrets",
    ]);
    let entries: BTreeMap<String, String> = serde_json::from_str(&out.ok()).unwrap();
    let stderr = out.stderr();
    assert_eq!(entries["REGISTRY"], registry);
    assert_eq!(entries["REGISTRY_REPOSITORY"], repo);
    assert_eq!(entries["CREDHOST_GRANT_REGISTRY_SCOPE"], "repository");
    assert!(stderr.contains("grant registry: repository"), "{stderr}");
    // The fs store has no URL: the job is pointed at the shared file.
    assert!(!entries.contains_key("PROJECT_URL"));
    assert!(entries["PROJECT_PATH"].ends_with("store/projects/app.zip"), "{entries:?}");

    // DOCKER_CONFIG_JSON carries the bearer as `registrytoken`, never the password.
    let config: serde_json::Value = serde_json::from_str(&entries["DOCKER_CONFIG_JSON"]).unwrap();
    let token = config["auths"][registry.as_str()]["registrytoken"].as_str().expect("registrytoken").to_owned();
    let password = svc.var("CREDHOST_TEST_REGISTRY_PASSWORD");
    assert!(!out.stdout().contains(&password), "the registry password reached the grant");
    assert_eq!(base64(&format!("{}:{token}", svc.var("CREDHOST_TEST_REGISTRY_USER"))), entries["REGISTRY_TOKEN"]);

    // The token's access claim lists exactly the granted scopes.
    let claims = jwt_claims(&token);
    let mut access: Vec<(String, Vec<String>)> = claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut actions: Vec<String> =
                a["actions"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
            actions.sort();
            (a["name"].as_str().unwrap().to_owned(), actions)
        })
        .collect();
    access.sort();
    let mut want =
        vec![(repo.clone(), vec!["pull".to_owned(), "push".to_owned()]), (base.clone(), vec!["pull".to_owned()])];
    want.sort();
    assert_eq!(access, want);
    let expires = entries["CREDHOST_GRANT_EXPIRES_AT"].clone();
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");

    // The registry enforces it: the granted repository takes the push, another does not.
    let out = skopeo_push(&ws, &registry, &repo, &["--dest-registry-token", &token]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let other = unique("not-granted");
    let out = skopeo_push(&ws, &registry, &other, &["--dest-registry-token", &token]);
    assert!(!out.status.success(), "a grant for {repo} pushed to {other}");
}

#[test]
fn a_grant_redacts_its_secrets_and_never_logs_them() {
    let svc = Services::get();
    let ws = Workspace::local_token(&svc);
    let repo = unique("hygiene");
    let shown = grant_json(&ws, &["--project", "projects/app.zip", "--repository", &repo, "--show-secrets"]);
    let token_entry = shown["REGISTRY_TOKEN"].clone();
    let out = ws.run(&["-vvv", "grant", "--project", "projects/app.zip", "--repository", &repo]);
    let text = format!("{}{}", out.ok(), out.stderr());
    assert!(text.contains("REGISTRY_TOKEN=<redacted>") && text.contains("DOCKER_CONFIG_JSON=<redacted>"), "{text}");
    // A fresh grant holds a fresh token: search for every JWT the run's output could hold.
    for secret in [token_entry.as_str(), &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD")] {
        assert!(!text.contains(secret), "a secret in -vvv output");
    }
    assert!(!text.contains("eyJ"), "a JWT in -vvv output:\n{text}");
}

#[test]
fn basic_auth_registries_cannot_narrow_and_say_so() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let err = ws.run(&["grant", "--project", "projects/app.zip", "--repository", "app"]).fails_with(2);
    assert!(err.contains("basic auth") && err.contains("--allow-unscoped-registry"), "{err}");
    let out = ws.run(&[
        "grant",
        "--project",
        "projects/app.zip",
        "--repository",
        "app",
        "--allow-unscoped-registry",
        "--format",
        "json",
    ]);
    let entries: BTreeMap<String, String> = serde_json::from_str(&out.ok()).unwrap();
    assert_eq!(entries["CREDHOST_GRANT_REGISTRY_SCOPE"], "registry");
    assert_eq!(entries["REGISTRY_TOKEN"], "<redacted>");
    assert!(out.stderr().contains("warning: the registry credential is not limited"), "{}", out.stderr());
}

#[test]
fn open_registries_need_nothing_and_k8s_secrets_carry_the_expiry() {
    let svc = Services::get();
    let ws = Workspace::local_fs(&svc.var("CREDHOST_TEST_REGISTRY_OPEN"));
    let manifest = ws
        .run(&[
            "grant",
            "--project",
            "projects/app.zip",
            "--repository",
            "app",
            "--format",
            "k8s-secret",
            "--name",
            "build-42",
            "--namespace",
            "ci",
        ])
        .ok();
    assert!(
        manifest
            .contains("  name: \"build-42\"\n  namespace: \"ci\"\n  annotations:\n    \"credhost.io/expires-at\": \""),
        "{manifest}"
    );
    assert!(manifest.contains("\"REGISTRY\": \"") && !manifest.contains("REGISTRY_TOKEN"), "{manifest}");
    assert!(manifest.contains("\"CREDHOST_GRANT_EXPIRES_AT\""), "{manifest}");
}

/// What a grant's storage keys may do on SeaweedFS's STS-enforcing store:
/// `read`, `other`, `put`, `list` as `ok` or the error code, one per line.
const PROBE_KEYS: &str = r#"
import os, sys, boto3
from botocore.config import Config
endpoint, key_id, secret, token, bucket, name, other = sys.argv[1:8]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
    aws_session_token=token, region_name=os.environ["CREDHOST_TEST_S3_REGION"],
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
def attempt(label, f):
    try:
        f()
        print(label, "ok")
    except Exception as e:
        print(label, getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__))
attempt("read", lambda: s3.get_object(Bucket=bucket, Key=name)["Body"].read())
attempt("other", lambda: s3.get_object(Bucket=bucket, Key=other)["Body"].read())
attempt("put", lambda: s3.put_object(Bucket=bucket, Key=name + ".new", Body=b"x"))
attempt("list", lambda: s3.list_objects_v2(Bucket=bucket))
"#;

/// Stores two objects on the STS-enforcing store with its admin keys
/// (through `ws`, whose store is that one); returns their names.
fn two_objects(ws: &Workspace) -> (String, String) {
    let (name, other) = (unique("granted"), unique("other"));
    write_zip(&ws.path("a.zip"), 300_000, 11);
    ws.run(&["upload", "a.zip", "--name", &name]).ok();
    ws.run(&["upload", "a.zip", "--name", &other]).ok();
    (name, other)
}

/// The grant's URL reads the object with plain curl; a tampered one does
/// not; its keys read that object and nothing else, as the store enforces.
fn the_grant_reads_one_object_only(ws: &Workspace, endpoint: &str, name: &str, other: &str) {
    let svc = Services::get();
    let project = format!("projects/{name}");
    let entries = grant_json(ws, &["--project", &project, "--with-keys", "--show-secrets", "--ttl", "15m"]);
    let url = &entries["PROJECT_URL"];
    assert!(url.contains("X-Amz-Expires=900") && url.contains("X-Amz-Security-Token="), "not a session's URL");
    let got = ws.path("got.zip");
    let (_, code) = curl(&["-o", got.to_str().unwrap(), url]);
    assert_eq!(code, "200");
    assert_eq!(sha256(&got), sha256(&ws.path("a.zip")));
    let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(curl(&["-o", "/dev/null", &tampered]).1, "403");
    let probe = python(
        &svc,
        PROBE_KEYS,
        &[
            endpoint,
            &entries["AWS_ACCESS_KEY_ID"],
            &entries["AWS_SECRET_ACCESS_KEY"],
            &entries["AWS_SESSION_TOKEN"],
            "projects",
            name,
            other,
        ],
    );
    assert_eq!(probe, "read ok\nother AccessDenied\nput AccessDenied\nlist AccessDenied\n");
    let expires = credhost::api::rules::parse_rfc3339(&entries["CREDHOST_GRANT_EXPIRES_AT"]).unwrap();
    let now = credhost::api::rules::unix_now();
    assert!((now + 840..=now + 900).contains(&expires), "expires at {expires}, now {now}");
}

#[test]
fn local_s3_grants_are_sessions_the_store_narrows() {
    let svc = Services::get();
    let endpoint = svc.var("CREDHOST_TEST_STS_S3_ENDPOINT");
    let mut ws = Workspace::local(&format!(
        "registry = {{ url = \"http://{}\", auth = \"none\" }}\nstorage = {{ kind = \"s3\", endpoint = \"{endpoint}\", region = \"{}\", bucket = \"projects\", access_key_id_env = \"TEST_S3_KEY\", secret_access_key_env = \"TEST_S3_SECRET\", grant_role_arn = \"{}\" }}",
        svc.var("CREDHOST_TEST_REGISTRY_OPEN"),
        svc.var("CREDHOST_TEST_S3_REGION"),
        svc.var("CREDHOST_TEST_STS_ROLE_ARN"),
    ));
    ws.set_env("TEST_S3_KEY", &svc.var("CREDHOST_TEST_S3_ACCESS_KEY"));
    ws.set_env("TEST_S3_SECRET", &svc.var("CREDHOST_TEST_S3_SECRET_KEY"));
    let (name, other) = two_objects(&ws);
    the_grant_reads_one_object_only(&ws, &endpoint, &name, &other);
}

#[test]
fn aws_grants_on_an_sts_that_enforces_session_policies() {
    let svc = Services::get();
    let endpoint = svc.var("CREDHOST_TEST_STS_S3_ENDPOINT");
    let ws = Workspace::aws(
        &svc,
        &endpoint,
        &format!("sts_endpoint_url = \"{endpoint}\"\njob_role_arn = \"{}\"", svc.var("CREDHOST_TEST_STS_ROLE_ARN")),
    );
    let (name, other) = two_objects(&ws);
    the_grant_reads_one_object_only(&ws, &endpoint, &name, &other);
}

#[test]
fn local_s3_without_a_role_signs_one_url_and_hands_out_no_keys() {
    let svc = Services::get();
    let ws = Workspace::local_s3(&svc, &format!("{{ url = \"http://{}\" }}", svc.var("CREDHOST_TEST_REGISTRY_OPEN")));
    let name = unique("no-role");
    write_zip(&ws.path("a.zip"), 10_000, 5);
    ws.run(&["upload", "a.zip", "--name", &name]).ok();
    let project = format!("projects/{name}");
    let entries = grant_json(&ws, &["--project", &project, "--show-secrets"]);
    assert!(entries["PROJECT_URL"].contains("X-Amz-Expires=3600"));
    assert!(!entries.contains_key("AWS_SECRET_ACCESS_KEY"), "the store's keys reached a grant");
    assert_eq!(curl(&["-o", "/dev/null", &entries["PROJECT_URL"]]).1, "200");
    let err = ws.run(&["grant", "--project", &project, "--with-keys"]).fails_with(2);
    assert!(err.contains("storage.grant_role_arn"), "{err}");
}

/// moto records the session policy that reached STS (it enforces none of
/// it, nor per-repository ECR resources: the document itself is what can
/// be checked here; SeaweedFS above shows a policy enforced).
#[test]
fn aws_session_policies_reach_sts_exactly() {
    let svc = Services::get();
    let moto = svc.var("CREDHOST_TEST_MOTO_STS_ENDPOINT");
    let role = "arn:aws:iam::123456789012:role/credhost-job";
    let ws = Workspace::aws(
        &svc,
        &svc.var("CREDHOST_TEST_S3_ENDPOINT"),
        &format!("sts_endpoint_url = \"{moto}\"\njob_role_arn = \"{role}\""),
    );
    let session = unique("build");
    let entries = grant_json(
        &ws,
        &[
            "--project",
            "projects/app.zip",
            "--repository",
            "team/app",
            "--pull",
            "base",
            "--ttl",
            "30m",
            "--session-name",
            &session,
            "--show-secrets",
        ],
    );
    assert_eq!(entries["REGISTRY"], AWS_REGISTRY);
    assert_eq!(entries["CREDHOST_GRANT_REGISTRY_SCOPE"], "repository");
    let config: serde_json::Value = serde_json::from_str(&entries["DOCKER_CONFIG_JSON"]).unwrap();
    assert_eq!(config["auths"][AWS_REGISTRY]["auth"].as_str(), Some(entries["REGISTRY_TOKEN"].as_str()));
    assert!(entries["PROJECT_URL"].contains("X-Amz-Expires=1800"));
    // The session STS made lasts the 30 minutes asked for, and so does the grant.
    let expires = credhost::api::rules::parse_rfc3339(&entries["CREDHOST_GRANT_EXPIRES_AT"]).unwrap();
    let now = credhost::api::rules::unix_now();
    assert!((now + 1740..=now + 1800).contains(&expires), "expires at {expires}, now {now}");

    let recorded = moto_assumed_roles(&svc);
    let mine: Vec<&serde_json::Value> = recorded.iter().filter(|r| r["session_name"] == session.as_str()).collect();
    assert_eq!(mine.len(), 1, "{recorded:?}");
    assert_eq!(mine[0]["role_arn"], role);
    let policy: serde_json::Value = serde_json::from_str(mine[0]["policy"].as_str().unwrap()).unwrap();
    let ecr = "arn:aws:ecr:us-east-1:123456789012:repository";
    assert_eq!(
        policy,
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::projects/app.zip"},
                {"Effect": "Allow", "Action": [
                    "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                    "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"
                ], "Resource": format!("{ecr}/team/app")},
                {"Effect": "Allow", "Action": [
                    "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"
                ], "Resource": format!("{ecr}/base")},
                {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"}
            ]
        })
    );

    // Credentials that are a session themselves cannot make a 2-hour
    // grant (role chaining): refused before STS is asked.
    let mut chained = ws;
    chained.set_env("AWS_SESSION_TOKEN", "a-session");
    let late = unique("chained");
    let err =
        chained.run(&["grant", "--project", "projects/app.zip", "--ttl", "2h", "--session-name", &late]).fails_with(2);
    assert!(err.contains("role chaining") && err.contains("--ttl 1h"), "{err}");
    assert!(!moto_assumed_roles(&svc).iter().any(|r| r["session_name"] == late.as_str()));
}

/// moto's record of AssumeRole calls.
fn moto_assumed_roles(svc: &Services) -> Vec<serde_json::Value> {
    moto_state(svc)["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default()
}

/// A grant stops working when it expires: its URL and its keys are refused
/// by the store once their 15 minutes (the shortest grant) are over. The
/// one test here that waits that long; it sleeps on its own thread.
#[test]
fn a_grants_url_and_keys_stop_working_when_it_expires() {
    let svc = Services::get();
    let endpoint = svc.var("CREDHOST_TEST_STS_S3_ENDPOINT");
    let ws = Workspace::aws(
        &svc,
        &endpoint,
        &format!("sts_endpoint_url = \"{endpoint}\"\njob_role_arn = \"{}\"", svc.var("CREDHOST_TEST_STS_ROLE_ARN")),
    );
    let (name, other) = two_objects(&ws);
    let project = format!("projects/{name}");
    let entries = grant_json(&ws, &["--project", &project, "--with-keys", "--show-secrets", "--ttl", "15m"]);
    let probe = |entries: &BTreeMap<String, String>| {
        python(
            &svc,
            PROBE_KEYS,
            &[
                &endpoint,
                &entries["AWS_ACCESS_KEY_ID"],
                &entries["AWS_SECRET_ACCESS_KEY"],
                &entries["AWS_SESSION_TOKEN"],
                "projects",
                &name,
                &other,
            ],
        )
    };
    assert_eq!(curl(&["-o", "/dev/null", &entries["PROJECT_URL"]]).1, "200");
    assert!(probe(&entries).starts_with("read ok\n"));
    let expires = credhost::api::rules::parse_rfc3339(&entries["CREDHOST_GRANT_EXPIRES_AT"]).unwrap();
    let wait = expires + 5 - credhost::api::rules::unix_now();
    std::thread::sleep(std::time::Duration::from_secs(wait.max(0) as u64));
    assert_eq!(curl(&["-o", "/dev/null", &entries["PROJECT_URL"]]).1, "403", "an expired grant's URL still read");
    let after = probe(&entries);
    assert!(!after.starts_with("read ok"), "an expired grant's keys still read: {after}");
}

/// gcp: the URL is a V4 signed GET; the registry token is one of the job's
/// own service account, minted by IAM Credentials for the grant's length;
/// keys are that token downscoped to the one object, which the test
/// services' GCS proxy enforces (no GCS emulator checks tokens).
#[test]
fn gcp_grants_a_job_accounts_token_and_a_token_downscoped_to_the_object() {
    use credhost_e2e::gcp;
    let svc = Services::get();
    let (ws, key) = gcp::keyed_ws(&svc, 3600);
    let account = format!("build-job@{}.iam.gserviceaccount.com", svc.var("CREDHOST_TEST_GCP_PROJECT"));
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let (iam, sts) = (svc.var("CREDHOST_TEST_GCP_IAM_ENDPOINT"), svc.var("CREDHOST_TEST_GCP_STS_ENDPOINT"));
    let auth = svc.var("CREDHOST_TEST_GCP_AUTH");

    // Without the job's account, a registry token cannot be granted.
    let err = gcp::run(&ws, &["grant", "--project", "projects/x.zip", "--repository", "app"], &[]).fails_with(2);
    assert!(err.contains("job_service_account"), "{err}");
    ws.write_config(&format!(
        "{text}iam_endpoint = \"{iam}\"\nsts_endpoint = \"{sts}\"\njob_service_account = \"{account}\"\n"
    ));

    let (name, other) = (unique("gcs-grant"), unique("gcs-other"));
    write_zip(&ws.path("a.zip"), 40_000, 17);
    gcp::run(&ws, &["upload", "a.zip", "--name", &name], &[]).ok();
    gcp::run(&ws, &["upload", "a.zip", "--name", &other], &[]).ok();

    // Longer than IAM Credentials issues: refused before it is asked.
    let generated = |since: u64| gcp::control(&svc, "GET", &format!("{auth}/_test/generated?since={since}"), None);
    let before = generated(0)["next"].as_u64().unwrap();
    let project = format!("projects/{name}");
    let err = gcp::run(&ws, &["grant", "--project", &project, "--repository", "app", "--ttl", "2h"], &[]).fails_with(2);
    assert!(err.contains("at most 3600 s"), "{err}");
    assert_eq!(generated(before)["calls"].as_array().unwrap().len(), 0, "IAM was asked for a refused grant");

    let exchanges = |since: u64| gcp::control(&svc, "GET", &format!("{auth}/_test/exchanges?since={since}"), None);
    let exchanged_before = exchanges(0)["next"].as_u64().unwrap();
    let out = gcp::run(
        &ws,
        &[
            "grant",
            "--project",
            &project,
            "--repository",
            "app",
            "--with-keys",
            "--ttl",
            "30m",
            "--format",
            "json",
            "--show-secrets",
        ],
        &[],
    );
    let entries: BTreeMap<String, String> = serde_json::from_str(&out.ok()).unwrap();
    assert_eq!(entries["CREDHOST_GRANT_REGISTRY_SCOPE"], "account");
    assert!(out.stderr().contains(&format!("an access token of {account}")), "{}", out.stderr());

    // IAM Credentials minted the registry token for the job's account, for 30 minutes, at the service's request.
    let calls = generated(before)["calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!((calls[0]["target"].as_str(), calls[0]["lifetime"].as_str()), (Some(account.as_str()), Some("1800s")));
    assert_eq!(calls[0]["caller"], key["client_email"]);
    let token = gcp::decode_b64(&entries["REGISTRY_TOKEN"]);
    let token = token.strip_prefix("oauth2accesstoken:").expect("oauth2accesstoken:TOKEN").to_owned();
    assert_eq!(gcp::token_account(&svc, &token).as_deref(), Some(account.as_str()));

    // The keys: one exchange, with the object's boundary.
    let ex = exchanges(exchanged_before)["exchanges"].as_array().unwrap().clone();
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(ex[0]["subject"], account.as_str());
    let rule = &ex[0]["boundary"]["accessBoundaryRules"][0];
    assert_eq!(rule["availablePermissions"], serde_json::json!(["inRole:roles/storage.objectViewer"]));
    assert_eq!(
        rule["availabilityCondition"]["expression"],
        format!("resource.name == 'projects/_/buckets/projects/objects/{name}'").as_str()
    );
    let downscoped = &entries["GOOGLE_OAUTH_ACCESS_TOKEN"];
    let gcs = svc.var("CREDHOST_TEST_GCS_ENDPOINT");
    let bearer = format!("Authorization: Bearer {downscoped}");
    let object = |n: &str| format!("{gcs}/storage/v1/b/projects/o/{n}?alt=media");
    assert_eq!(curl(&["-o", "/dev/null", "-H", &bearer, &object(&name)]).1, "200");
    assert_eq!(curl(&["-o", "/dev/null", "-H", &bearer, &object(&other)]).1, "403");
    assert_eq!(curl(&["-o", "/dev/null", "-H", &bearer, &format!("{gcs}/storage/v1/b/projects/o")]).1, "403");

    // The URL reads the object with nothing else.
    let (_, code) = curl(&["-o", ws.path("got.zip").to_str().unwrap(), &entries["PROJECT_URL"]]);
    assert_eq!(code, "200");
    assert_eq!(sha256(&ws.path("got.zip")), sha256(&ws.path("a.zip")));
    gcp::delete_object(&svc, &name);
    gcp::delete_object(&svc, &other);
}

/// A token server's own lifetime ends the grant early, and says so; once
/// the token has expired, the registry refuses it (Distribution allows 60 s
/// of clock skew past `exp`).
#[test]
fn a_token_expires_with_its_grant_and_is_then_refused() {
    let svc = Services::get();
    let registry = svc.var("CREDHOST_TEST_REGISTRY_TOKEN");
    let ws = Workspace::local_token(&svc);
    let repo = unique("expiring");
    let knob = format!("{}/_test/lifetime", svc.var("CREDHOST_TEST_TOKEN_REALM").trim_end_matches("/token"));
    let rule = serde_json::json!({ "scope": repo, "expires_in": 3 }).to_string();
    let (_, code) = curl(&["-X", "POST", "-H", "Content-Type: application/json", "-d", &rule, &knob]);
    assert_eq!(code, "200");
    let out = ws.run(&[
        "grant",
        "--project",
        "projects/app.zip",
        "--repository",
        &repo,
        "--format",
        "json",
        "--show-secrets",
    ]);
    let entries: BTreeMap<String, String> = serde_json::from_str(&out.ok()).unwrap();
    assert!(out.stderr().contains("its registry credential expires first"), "{}", out.stderr());
    let expires = credhost::api::rules::parse_rfc3339(&entries["CREDHOST_GRANT_EXPIRES_AT"]).unwrap();
    assert!(expires <= credhost::api::rules::unix_now() + 3, "{entries:?}");
    let config: serde_json::Value = serde_json::from_str(&entries["DOCKER_CONFIG_JSON"]).unwrap();
    let token = config["auths"][registry.as_str()]["registrytoken"].as_str().unwrap().to_owned();
    let out = skopeo_push(&ws, &registry, &repo, &["--dest-registry-token", &token]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(std::time::Duration::from_secs((expires + 62 - credhost::api::rules::unix_now()).max(0) as u64));
    let out = skopeo_push(&ws, &registry, &repo, &["--dest-registry-token", &token]);
    assert!(!out.status.success(), "an expired grant's token still pushed");
}
