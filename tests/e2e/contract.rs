//! The documented command-line contract bits that no other test touches:
//! `--quiet`, `CREDHOST_LOG`, `--scope`, `docker-config -o -`, the credential
//! helper's configuration lookup, the exit codes of an unreachable service,
//! plugin instances (two identities of one plugin), the token cache's
//! refresh before expiry, and the README's first command.

use std::time::Duration;

use credhost_e2e::*;

#[test]
fn quiet_keeps_notes_and_progress_out_but_not_errors() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let run = ws.run(&["credentials"]);
    assert!(run.stderr().contains("secret value(s) printed as <redacted>"), "{}", run.stderr());
    let run = ws.run(&["--quiet", "credentials"]);
    assert_eq!(run.code(), 0);
    assert_eq!(run.stderr(), "", "--quiet prints nothing but errors");
    assert!(run.stdout().contains("REGISTRY_TOKEN=<redacted>"));
    let err = ws.run(&["--quiet", "download", "projects", "missing.zip"]).fails_with(3);
    assert!(err.starts_with("credhost: "), "errors still print: {err}");
    // And -q with -v is a usage error.
    ws.run(&["-q", "-v", "check"]).fails_with(2);
}

#[test]
fn credhost_log_chooses_what_is_logged() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 1000, 1);
    let quiet = ws.run(&["upload", "a.zip"]);
    assert_eq!((quiet.code(), quiet.stderr().as_str()), (0, ""));
    let mut info = ws.cmd(&["upload", "a.zip"]);
    info.env("CREDHOST_LOG", "info");
    let run = Run(info.output().unwrap());
    assert_eq!(run.code(), 0);
    assert!(run.stderr().contains("INFO") && run.stderr().contains("stored projects/a.zip"), "{}", run.stderr());
    // CREDHOST_LOG wins over -v.
    let mut off = ws.cmd(&["-vvv", "upload", "a.zip"]);
    off.env("CREDHOST_LOG", "off");
    let run = Run(off.output().unwrap());
    assert_eq!((run.code(), run.stderr().as_str()), (0, ""));
}

/// The claims of a JWT, decoded.
fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = python(
        &Services::get(),
        "import base64,sys; s=sys.argv[1]; print(base64.urlsafe_b64decode(s + '=' * (-len(s) % 4)).decode())",
        &[payload],
    );
    serde_json::from_str(&json).unwrap()
}

#[test]
fn scope_and_repository_choose_the_token_scope() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(
        &text
            .replace(&svc.var("CREDHOST_TEST_REGISTRY_BASIC"), &svc.var("CREDHOST_TEST_REGISTRY_TOKEN"))
            .replace("\"basic\"", "\"token\""),
    );
    let token = |args: &[&str]| {
        let mut full = vec!["token", "--format", "json"];
        full.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&ws.run(&full).ok()).unwrap();
        jwt_claims(v["password"].as_str().unwrap())["access"].clone()
    };
    assert_eq!(
        token(&["--scope", "repository:scoped-demo:pull"]),
        serde_json::json!([{"type": "repository", "name": "scoped-demo", "actions": ["pull"]}])
    );
    assert_eq!(
        token(&["--repository", "shorthand-demo"]),
        serde_json::json!([{"type": "repository", "name": "shorthand-demo", "actions": ["pull", "push"]}])
    );
    ws.run(&["token", "--scope", "a", "--repository", "b"]).fails_with(2);
}

#[test]
fn docker_config_to_standard_output() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let out = ws.run(&["docker-config", "-o", "-"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["credHelpers"][svc.var("CREDHOST_TEST_REGISTRY_BASIC")], "credhost");
    assert!(!ws.path("config.json").exists());
    let err = ws.run(&["docker-config", "-o", "-", "--static"]).fails_with(2);
    assert!(err.contains("--static writes credentials"), "{err}");
}

/// Registry clients run helpers in whatever directory the user is in: a
/// `plugins.toml` there must never choose which plugin code runs.
#[test]
fn the_credential_helper_never_reads_the_current_directory() {
    let svc = Services::get();
    let mut ws = Workspace::local_basic(&svc);
    ws.unset_env("CREDHOST_CONFIG");
    ws.set_env("HOME", ws.path("home").to_str().unwrap());
    ws.set_env("XDG_CONFIG_HOME", ws.path("xdg").to_str().unwrap());
    let run = ws.helper(&["get"], svc.var("CREDHOST_TEST_REGISTRY_BASIC").as_bytes());
    assert_eq!(run.code(), 1);
    let out = run.stdout();
    assert!(out.contains(&format!("{}/credhost/plugins.toml", ws.path("xdg").display())), "{out}");
    assert!(!out.contains("Secret"), "answered from ./plugins.toml: {out}");
}

#[test]
fn an_unreachable_service_is_exit_1_and_a_missing_bucket_exit_3() {
    let svc = Services::get();
    let mut ws = Workspace::local(
        "registry = { url = \"http://127.0.0.1:1\" }\nstorage = { kind = \"s3\", endpoint = \"http://127.0.0.1:1\", bucket = \"projects\", access_key_id_env = \"K\", secret_access_key_env = \"S\" }",
    );
    ws.set_env("K", "key");
    ws.set_env("S", "secret");
    write_zip(&ws.path("a.zip"), 1000, 1);
    let err = ws.run(&["upload", "a.zip"]).fails_with(1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    ws.run(&["download", "projects", "a.zip", "-o", "x.zip"]).fails_with(1);

    let ws = Workspace::local_s3(&svc, "{ url = \"http://127.0.0.1:1\" }");
    // (A bucket never written to: SeaweedFS creates buckets on the first PUT.)
    let err = ws.run(&["download", "never-created-bucket", "a.zip", "-o", "x.zip"]).fails_with(3);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Two instances of one plugin, each with its own identity and registry:
/// two AWS accounts (the second through an assumed role) whose ECR
/// registries one credential helper serves.
#[test]
fn two_instances_of_one_plugin_serve_two_registries_with_two_identities() {
    let svc = Services::get();
    let mut ws = Workspace::aws(&svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "");
    let base = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let (prod, dev) = ("123456789012.dkr.ecr.us-east-1.amazonaws.com", "222222222222.dkr.ecr.us-east-1.amazonaws.com");
    let settings = base[base.find("[plugins.aws.settings]").unwrap() + "[plugins.aws.settings]".len()..].to_owned();
    let text = format!(
        "platform = \"aws-prod\"\nplugin_dir = {:?}\n\n[plugins.aws-prod]\nplugin = \"aws\"\n[plugins.aws-prod.settings]{settings}\n[plugins.aws-dev]\nplugin = \"aws\"\n[plugins.aws-dev.settings]{}\nrole_arn = \"arn:aws:iam::222222222222:role/dev\"\nendpoint_url = \"{}\"\n",
        release_dir().display().to_string(),
        settings.replace(AWS_REGISTRY, dev),
        svc.var("CREDHOST_TEST_MOTO_ENDPOINT"),
    );
    ws.write_config(&text);
    ws.set_env("CREDHOST_CONFIG", ws.path("plugins.toml").to_str().unwrap());

    let decode = |token: &str| {
        python(&svc, "import base64,sys; print(base64.b64decode(sys.argv[1]).decode())", &[token]).trim().to_owned()
    };
    assert_eq!(decode(ws.run(&["token"]).ok().trim()), "AWS:123456789012-auth-token");
    assert_eq!(decode(ws.run(&["token", "--registry", dev]).ok().trim()), "AWS:222222222222-auth-token");
    assert_eq!(decode(ws.run(&["token", "--registry", prod]).ok().trim()), "AWS:123456789012-auth-token");
    // Naming the instance still works, and it refuses a registry it does not serve.
    ws.run(&["--platform", "aws-prod", "token", "--registry", dev]).fails_with(3);

    for (host, account) in [(prod, "123456789012"), (dev, "222222222222")] {
        let out = ws.helper(&["get"], format!("https://{host}\n").as_bytes()).ok();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["Username"].as_str(), v["Secret"].as_str()),
            (Some("AWS"), Some(format!("{account}-auth-token").as_str())),
            "{host}"
        );
    }
    let out = ws.run(&["plugins"]).ok();
    assert!(out.contains("aws-dev") && out.contains("(plugin aws)"), "{out}");
}

/// Registry credentials are replaced shortly before they expire, not after:
/// tokens living 8 s are reused for 6 s (a quarter of the lifetime before
/// expiry), then fetched anew while the old one still works.
#[test]
fn registry_tokens_are_refreshed_before_they_expire() {
    let svc = Services::get();
    let (ws, key) = gcp::keyed_ws(&svc, 8);
    let account = key["client_email"].as_str().unwrap().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        ws.apply_env();
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let first = provider.registry_auth(None, None).await.unwrap().unwrap();
        let expires = credhost::unix_seconds(first.expires_at.unwrap());
        let again = provider.registry_auth(None, None).await.unwrap().unwrap();
        assert_eq!(again.secret, first.secret, "reused while fresh");
        // Past the refresh point (6 s), before the expiry (8 s).
        tokio::time::sleep(Duration::from_millis(6500)).await;
        let now = credhost::api::rules::unix_now();
        let fresh = provider.registry_auth(None, None).await.unwrap().unwrap();
        assert_ne!(fresh.secret, first.secret, "replaced before it expired");
        assert!(now < expires, "the old token was still valid when it was replaced");
        assert_eq!(gcp::token_account(&svc, fresh.secret.expose()).as_deref(), Some(account.as_str()));
    });
}

/// The README's first command: the round trip example on the embedded
/// default configuration (the repository's own plugins.toml, filesystem
/// store), run here from the built example in a fresh directory. (`.ci/run`
/// also runs the command verbatim on a clean clone.)
#[test]
fn the_readme_first_command_runs_the_main_job_on_the_default() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let first = readme.lines().skip_while(|l| !l.starts_with("```")).nth(1).unwrap();
    assert!(first.contains("--example roundtrip"), "the README's first command is the round trip: {first}");
    let ws = Workspace::new();
    let default = std::fs::read_to_string(repo_root().join("plugins.toml")).unwrap();
    let text = default
        .lines()
        .map(|l| {
            if l.starts_with("plugin_dir") {
                format!("plugin_dir = {:?}", release_dir().display().to_string())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    ws.write_config(&text);
    let run = Run(ws.program(artifact("examples/roundtrip"), &["plugins.toml"]).output().unwrap());
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert!(run.stdout().contains("round trip ok: identical bytes"), "{}", run.stdout());
    assert!(ws.path(".credhost/storage/projects/1234.zip").exists());
}
