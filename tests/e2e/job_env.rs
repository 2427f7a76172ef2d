//! `credhost credentials --format dotenv|shell|k8s-secret`: the forms build
//! jobs consume, checked with a real shell and a real YAML parser.

use std::{collections::BTreeMap, process::Command};

use credhost_e2e::*;

/// A secret key with everything a shell or a YAML reader could misread.
const TRICKY: &str = "it's \"quoted\"\n  two  spaces\t$HOME `id` $(id) \\ *.zip !x -n\n";
/// A storage directory name (a plain, unredacted entry) in the same spirit.
const TRICKY_DIR: &str = "store 'one' \"two\"\nthree";

/// The local plugin on S3 whose secret key (only reported, never sent: the
/// job gets it as AWS_SECRET_ACCESS_KEY) is [`TRICKY`], and on the htpasswd
/// registry (so REGISTRY_TOKEN is there too).
fn s3_ws(svc: &Services) -> Workspace {
    let mut ws = Workspace::local_s3(
        svc,
        &format!(
            "{{ url = \"http://{}\", auth = \"basic\", username_env = \"REG_USER\", password_env = \"REG_PASS\" }}",
            svc.var("CREDHOST_TEST_REGISTRY_BASIC")
        ),
    );
    ws.set_env("REG_USER", &svc.var("CREDHOST_TEST_REGISTRY_USER"));
    ws.set_env("REG_PASS", &svc.var("CREDHOST_TEST_REGISTRY_PASSWORD"));
    ws.set_env("TEST_S3_SECRET", TRICKY);
    ws
}

fn local_ws(svc: &Services) -> Workspace {
    Workspace::local(&format!(
        "registry = {{ url = \"http://{}\", auth = \"none\" }}\nstorage = {{ kind = \"fs\", root = {TRICKY_DIR:?}, bucket = \"projects\" }}",
        svc.var("CREDHOST_TEST_REGISTRY_OPEN")
    ))
}

/// The entries as the JSON form gives them.
fn json_entries(ws: &Workspace, show_secrets: bool) -> BTreeMap<String, String> {
    let mut args = vec!["credentials", "--format", "json"];
    if show_secrets {
        args.push("--show-secrets");
    }
    serde_json::from_str(&ws.run(&args).ok()).unwrap()
}

/// The environment `sh` has after `eval`ing `script`, starting from an empty one.
fn eval_in_sh(script: &str) -> BTreeMap<String, String> {
    let out = Command::new("sh")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["-c", "eval \"$1\" && env -0", "sh", script])
        .output()
        .expect("sh");
    assert!(out.status.success(), "sh failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn shell_exports_round_trip_through_sh() {
    let svc = Services::get();
    for ws in [s3_ws(&svc), local_ws(&svc)] {
        let expected = json_entries(&ws, true);
        let script = ws.run(&["credentials", "--format", "shell", "--show-secrets"]).ok();
        assert!(script.starts_with("export "), "{script}");
        let env = eval_in_sh(&script);
        for (k, v) in &expected {
            assert_eq!(env.get(k), Some(v), "{k} did not survive eval");
        }
        // Nothing was executed: $(id) and `id` stayed text.
        assert!(!env.values().any(|v| v.contains("uid=")), "a command substitution ran");
    }
    // The tricky values really were in the output.
    let ws = s3_ws(&svc);
    assert_eq!(json_entries(&ws, true)["AWS_SECRET_ACCESS_KEY"], TRICKY);
    let ws = local_ws(&svc);
    assert!(json_entries(&ws, false)["CREDHOST_STORAGE_ROOT"].ends_with(TRICKY_DIR));
}

#[test]
fn k8s_secret_parses_as_yaml_with_the_expected_keys() {
    let svc = Services::get();
    let ws = s3_ws(&svc);
    let expected = json_entries(&ws, true);
    let manifest = ws
        .run(&["credentials", "--format", "k8s-secret", "--show-secrets", "--name", "build-1234", "--namespace", "ci"])
        .ok();
    let parsed = python(&svc, "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(sys.argv[1])))", &[&manifest]);
    let v: serde_json::Value = serde_json::from_str(&parsed).unwrap();
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "Secret");
    assert_eq!(v["type"], "Opaque");
    assert_eq!(v["metadata"]["name"], "build-1234");
    assert_eq!(v["metadata"]["namespace"], "ci");
    let data: BTreeMap<String, String> = serde_json::from_value(v["stringData"].clone()).unwrap();
    assert_eq!(data, expected);
    for key in job_env_keys("local_s3") {
        assert!(data.contains_key(&key), "{key} missing: {data:?}");
    }

    // Names Kubernetes would refuse are refused here, before the plugin is asked.
    let err = ws.run(&["credentials", "--format", "k8s-secret", "--name", "Build_1"]).fails_with(2);
    assert!(err.contains("--name \"Build_1\" is not a valid Kubernetes name"), "{err}");
    let err = ws.run(&["credentials", "--format", "k8s-secret", "--namespace", "a.b"]).fails_with(2);
    assert!(err.contains("--namespace"), "{err}");
}

#[test]
fn dotenv_quotes_only_what_needs_it() {
    let svc = Services::get();
    let ws = s3_ws(&svc);
    let out = ws.run(&["credentials", "--format", "dotenv", "--show-secrets"]).ok();
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing: {out}"))
            .to_owned()
    };
    assert_eq!(line("AWS_DEFAULT_REGION"), format!("AWS_DEFAULT_REGION={}", svc.var("CREDHOST_TEST_S3_REGION")));
    assert_eq!(line("AWS_ENDPOINT_URL"), format!("AWS_ENDPOINT_URL={}", svc.var("CREDHOST_TEST_S3_ENDPOINT")));
    // A value with a space but no quote: single quotes, literal in every dotenv reader.
    let spaced = Workspace::local(&format!(
        "registry = {{ url = \"http://{}\", auth = \"none\" }}\nstorage = {{ kind = \"fs\", root = \"a dir\", bucket = \"projects\" }}",
        svc.var("CREDHOST_TEST_REGISTRY_OPEN")
    ));
    let env = spaced.run(&["credentials", "--format", "dotenv"]).ok();
    let root = env.lines().find(|l| l.starts_with("CREDHOST_STORAGE_ROOT=")).unwrap_or_default();
    assert!(root.starts_with("CREDHOST_STORAGE_ROOT='") && root.ends_with("a dir'"), "{env}");
    // A quote and line breaks: double quotes with escapes, one line.
    assert_eq!(
        line("AWS_SECRET_ACCESS_KEY"),
        "AWS_SECRET_ACCESS_KEY=\"it's \\\"quoted\\\"\\n  two  spaces\\t$HOME `id` $(id) \\\\ *.zip !x -n\\n\""
    );
    assert_eq!(out.lines().count(), json_entries(&ws, false).len());
}

#[test]
fn every_form_redacts_secrets_unless_asked() {
    let svc = Services::get();
    let ws = s3_ws(&svc);
    let password = svc.var("CREDHOST_TEST_REGISTRY_PASSWORD");
    for format in ["env", "json", "dotenv", "shell", "k8s-secret"] {
        let run = ws.run(&["credentials", "--format", format]);
        let out = run.ok();
        assert!(!out.contains("two  spaces") && !out.contains(&password), "{format} leaked a secret: {out}");
        assert!(out.contains("<redacted>"), "{format}: {out}");
        assert!(run.stderr().contains("add --show-secrets"), "{format}: {}", run.stderr());
    }
    let out = ws.run(&["credentials", "--format", "shell", "--show-secrets"]).ok();
    assert!(out.contains("export AWS_SECRET_ACCESS_KEY='it'\\''s \"quoted\"\n  two  spaces"), "{out}");
}
