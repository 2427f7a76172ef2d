//! The aws plugin's registry tokens and credentials, against moto (ECR, STS)
//! and the htpasswd registry (as a stand-in ECR that accepts moto's token).

use std::{process::Command, time::Duration};

use credhost_e2e::*;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn aws_ws(svc: &Services) -> Workspace {
    Workspace::aws(svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "")
}

/// The SDK's own trace records stay in the plugin unless asked for; asked
/// for, the record of ECR's answer is there, redacted, and no record holds
/// the registry password in any form: the `authorizationToken` as ECR
/// returns it (base64 of `AWS:password`), the password decoded, or the
/// SDK's debug text of its output (`authorization_token: Some(`).
#[test]
fn the_ecr_answer_never_reaches_a_trace_record() {
    let svc = Services::get();
    let ws = aws_ws(&svc);
    let password = svc.var("CREDHOST_TEST_AWS_REGISTRY_PASSWORD");
    let returned = base64(&format!("AWS:{password}"));
    for forward in [false, true] {
        let mut cmd = ws.cmd(&["credentials", "--format", "json"]);
        cmd.env("CREDHOST_LOG", "trace");
        if forward {
            cmd.env("CREDHOST_LOG_DEPENDENCIES", "1");
        }
        let run = Run(cmd.output().unwrap());
        assert_eq!(run.code(), 0, "{}", run.stderr());
        let out = run.stdout() + &run.stderr();
        // The records of ECR's answer: its body as read, and the output the
        // SDK made of it; there only when forwarding was asked for.
        let body_records: Vec<&str> = out.lines().filter(|l| l.contains("read HTTP response body")).collect();
        assert_eq!(!body_records.is_empty(), forward, "dependency records forwarded only when asked");
        if forward {
            assert!(
                out.contains("GetAuthorizationToken") && body_records.iter().all(|l| l.contains("REDACTED")),
                "the ECR call's records, its answer redacted: {body_records:?}"
            );
        }
        for (what, needle) in [
            ("the authorizationToken as ECR returned it", returned.as_str()),
            ("the ECR password", password.as_str()),
            ("the SDK's debug text of the token", "authorization_token: Some("),
        ] {
            assert!(!out.contains(needle), "{what} in a trace record (forwarding: {forward})");
        }
    }
}

#[test]
fn ecr_token_is_fetched_decoded_and_matched_by_host() {
    let svc = Services::get();
    let ws = aws_ws(&svc);
    let out = ws.run(&["token", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["server"], AWS_REGISTRY);
    assert_eq!(v["username"], "AWS");
    assert_eq!(v["password"], svc.var("CREDHOST_TEST_AWS_REGISTRY_PASSWORD").as_str());
    // moto's expiry is fixed in 2015: returned as is.
    assert!(v["expires_at"].as_i64().unwrap() < now());

    // The docker form is base64 of AWS:password, as ECR's own token.
    let token = ws.run(&["token"]).ok();
    let decoded = Command::new("python3")
        .args(["-c", "import base64,sys; print(base64.b64decode(sys.argv[1]).decode())", token.trim()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&decoded.stdout).trim(),
        format!("AWS:{}", svc.var("CREDHOST_TEST_AWS_REGISTRY_PASSWORD"))
    );

    // The registry matches with or without a scheme; another host does not.
    ws.run(&["token", "--registry", &format!("https://{AWS_REGISTRY}")]).ok();
    let err = ws.run(&["token", "--registry", "999999999999.dkr.ecr.us-east-1.amazonaws.com"]).fails_with(3);
    assert!(err.contains("999999999999"), "{err}");
}

#[test]
fn unmatched_registry_lists_what_ecr_returned() {
    let svc = Services::get();
    let ws = Workspace::aws(&svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&text.replace(AWS_REGISTRY, "999999999999.dkr.ecr.us-east-1.amazonaws.com"));
    let err = ws.run(&["token"]).fails_with(3);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("no authorization for registry 999999999999.dkr.ecr.us-east-1.amazonaws.com")
            && err.contains(&format!("https://{AWS_REGISTRY}")),
        "{err}"
    );
}

#[test]
fn expired_ecr_tokens_are_never_cached() {
    let svc = Services::get();
    let ws = aws_ws(&svc);
    let logs = capture_logs();
    ws.apply_env();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fetched = |logs: &std::sync::Mutex<Vec<String>>| {
        logs.lock().unwrap().iter().filter(|l| l.contains("ECR authorization token fetched")).count()
    };
    rt.block_on(async {
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let before = fetched(logs);
        for _ in 0..3 {
            let auth = provider.registry_auth(None, None).await.unwrap().expect("ECR needs a token");
            assert!(credhost::unix_seconds(auth.expires_at.unwrap()) < now());
        }
        assert_eq!(fetched(logs) - before, 3, "an expired token was served from the cache");
    });
}

#[test]
fn ecr_token_lets_skopeo_push() {
    let svc = Services::get();
    let ws = aws_ws(&svc);
    let v: serde_json::Value = serde_json::from_str(&ws.run(&["token", "--format", "json"]).ok()).unwrap();
    let creds = format!("{}:{}", v["username"].as_str().unwrap(), v["password"].as_str().unwrap());
    let layout = ws.path("oci");
    let st = Command::new("python3")
        .arg(repo_root().join("tests/services/make_oci.py"))
        .arg(&layout)
        .arg("v1")
        .output()
        .unwrap();
    assert!(st.status.success());
    // The htpasswd registry has user AWS with moto's password: it stands in for ECR.
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/ecr-demo:v1", svc.var("CREDHOST_TEST_REGISTRY_BASIC")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn credentials_from_the_environment() {
    let svc = Services::get();
    let mut ws = aws_ws(&svc);
    ws.set_env("AWS_SESSION_TOKEN", "session-token-from-env");
    let out = ws.run(&["credentials", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["AWS_ACCESS_KEY_ID"], svc.var("CREDHOST_TEST_S3_ACCESS_KEY").as_str());
    assert_eq!(v["AWS_SECRET_ACCESS_KEY"], "<redacted>");
    assert_eq!(v["AWS_SESSION_TOKEN"], "<redacted>");
    assert_eq!(v["AWS_DEFAULT_REGION"], "us-east-1");
    assert_eq!(v["REGISTRY_TOKEN"], "<redacted>");
    assert!(!out.contains(&svc.var("CREDHOST_TEST_S3_SECRET_KEY")));
    let out = ws.run(&["credentials", "--show-secrets"]).ok();
    assert!(out.contains("AWS_SESSION_TOKEN=session-token-from-env"), "{out}");
    assert!(out.contains(&format!("AWS_SECRET_ACCESS_KEY={}", svc.var("CREDHOST_TEST_S3_SECRET_KEY"))), "{out}");
}

#[test]
fn credentials_from_a_profile_in_a_shared_config_file() {
    let svc = Services::get();
    let mut ws = Workspace::aws(&svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "profile = \"build\"");
    let config = ws.path("aws-config");
    std::fs::write(&config, "[profile build]\nregion = eu-west-1\n").unwrap();
    let creds = ws.path("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = WRONGDEFAULT\naws_secret_access_key = wrong\n\n[build]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            svc.var("CREDHOST_TEST_S3_ACCESS_KEY"),
            svc.var("CREDHOST_TEST_S3_SECRET_KEY")
        ),
    )
    .unwrap();
    ws.set_env("AWS_CONFIG_FILE", config.to_str().unwrap());
    ws.set_env("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap());
    // Only the profile holds keys: the environment has none.
    ws.unset_env("AWS_ACCESS_KEY_ID");
    ws.unset_env("AWS_SECRET_ACCESS_KEY");
    let out = ws.run(&["credentials", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["AWS_ACCESS_KEY_ID"], svc.var("CREDHOST_TEST_S3_ACCESS_KEY").as_str());
    // The settings' region wins over the profile's.
    assert_eq!(v["AWS_DEFAULT_REGION"], "us-east-1");
    // SeaweedFS checks signatures: an upload proves the profile's keys were used.
    write_zip(&ws.path("p.zip"), 2000, 8);
    ws.run(&["upload", "p.zip", "--name", &unique("profile")]).ok();

    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&text.replace("profile = \"build\"", "profile = \"nope\""));
    let err = ws.run(&["upload", "p.zip", "--name", &unique("profile")]).fails_with(4);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn assumed_role_credentials_come_from_sts() {
    let svc = Services::get();
    let moto = svc.var("CREDHOST_TEST_MOTO_ENDPOINT");
    let ws = Workspace::aws(
        &svc,
        &moto,
        &format!("role_arn = \"arn:aws:iam::123456789012:role/deployer\"\nendpoint_url = \"{moto}\""),
    );
    let out = ws.run(&["credentials", "--format", "json", "--show-secrets"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = v["AWS_ACCESS_KEY_ID"].as_str().unwrap();
    assert_ne!(key, svc.var("CREDHOST_TEST_S3_ACCESS_KEY"), "the role's keys, not the caller's");
    assert!(!v["AWS_SESSION_TOKEN"].as_str().unwrap_or("").is_empty(), "assumed roles carry a session token: {v}");
}

#[test]
fn check_probes_bucket_and_token() {
    let svc = Services::get();
    let ws = aws_ws(&svc);
    let out = ws.run(&["check"]).ok();
    assert!(out.contains("ok   storage") && out.contains("ok   registry"), "{out}");
    let ws = Workspace::aws(&svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&text.replace("bucket = \"projects\"", "bucket = \"no-such-bucket\""));
    let run = ws.run(&["check"]);
    run.fails_with(6);
    assert!(run.stdout().contains("FAIL storage"), "{}", run.stdout());
}

#[test]
fn settings_errors_name_the_key() {
    let svc = Services::get();
    let ws = aws_ws(&svc);
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&text.replace("force_path_style = true", "force_path_style = true\nregoin = \"x\""));
    let err = ws.run(&["check"]).fails_with(2);
    assert!(err.contains("plugins.toml:") && err.contains("regoin"), "{err}");
    ws.write_config(&text.replace("force_path_style = true", "force_path_style = true\nrole_arn = \"deployer\""));
    let err = ws.run(&["check"]).fails_with(2);
    assert!(err.contains("role_arn") && err.contains("not an ARN"), "{err}");
}

/// A server that accepts connections and never answers.
fn silent_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Hold every connection open, reading nothing, until the test ends.
        for stream in listener.incoming().take(64).flatten() {
            held.push(stream);
        }
    });
    (format!("http://{addr}"), handle)
}

/// Against ECR and S3 endpoints that accept connections and never answer,
/// `token` and `check` end within the instance's `timeout`, and say so.
#[test]
fn endpoints_that_never_answer_cost_a_bounded_wait() {
    let svc = Services::get();
    let (silent, _server) = silent_server();
    let ws = Workspace::aws(&svc, &silent, "");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let text = text
        .replace(
            &format!("ecr_endpoint_url = \"{}\"", svc.var("CREDHOST_TEST_MOTO_ENDPOINT")),
            &format!("ecr_endpoint_url = \"{silent}\""),
        )
        .replace("[plugins.aws.settings]", "[plugins.aws]\ntimeout = 3\n\n[plugins.aws.settings]");
    ws.write_config(&text);
    for args in [&["token"][..], &["check"]] {
        let started = std::time::Instant::now();
        let err = ws.run(args).fails_with(1);
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?} took {:?}", started.elapsed());
        assert!(err.contains("no answer within 3 s"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
