//! The gcp plugin through the `credhost` binary: GCS on gcp-storage-emulator
//! behind the proxy that refuses requests without a current token, keys
//! issued by the local OAuth token endpoint, the metadata-server stand-in,
//! and the Python google-cloud-storage client as a second real client.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use credhost_e2e::*;

const MIB: u64 = 1 << 20;
/// The plugin's resumable chunk size.
const CHUNK: u64 = 16 * MIB;

/// Variables that would let the machine's own Google credentials in.
const GOOGLE_VARS: [&str; 4] = ["GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "CLOUDSDK_CONFIG", "DEPLOY_KEY"];

/// A workspace with the gcp plugin active; `credentials` is the TOML value
/// of the `credentials` setting, or `None` for the default order.
fn gcp_ws(svc: &Services, credentials: Option<&str>) -> Workspace {
    let ws = Workspace::new();
    let credentials = credentials.map(|c| format!("credentials = {c}\n")).unwrap_or_default();
    ws.write_config(&format!(
        "platform = \"gcp\"\nplugin_dir = {:?}\n\n[plugins.gcp.settings]\nproject_id = \"{}\"\nlocation = \"us-central1\"\nregistry = \"us-central1-docker.pkg.dev\"\nbucket = \"{}\"\nstorage_endpoint = \"{}\"\n{credentials}",
        release_dir().display().to_string(),
        svc.var("CREDHOST_TEST_GCP_PROJECT"),
        svc.var("CREDHOST_TEST_GCS_BUCKET"),
        svc.var("CREDHOST_TEST_GCS_ENDPOINT"),
    ));
    ws
}

/// A workspace using a fresh service-account key (tokens living `lifetime`
/// seconds) from `key.json`; returns the key JSON too.
fn keyed_ws(svc: &Services, lifetime: u64) -> (Workspace, serde_json::Value) {
    let ws = gcp_ws(svc, Some("{ service_account_file = \"key.json\" }"));
    let key = new_key(svc, lifetime);
    std::fs::write(ws.path("key.json"), key.to_string()).unwrap();
    (ws, key)
}

/// Runs credhost with the Google variables of this machine removed, `HOME`
/// in the workspace (no gcloud file), and `env` set.
fn run(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = ws.cmd(args);
    for k in GOOGLE_VARS {
        c.env_remove(k);
    }
    c.env("HOME", ws.dir.path());
    for (k, v) in env {
        c.env(k, v);
    }
    Run(c.output().expect("spawn credhost"))
}

const HTTP: &str = r#"
import json, os, sys, urllib.request, urllib.error
def call(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
"#;

/// `METHOD URL [BODY]` against a stand-in's control API; the JSON answer.
fn control(svc: &Services, method: &str, url: &str, body: Option<&str>) -> serde_json::Value {
    let script = format!("{HTTP}\ncode, text = call(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)\nassert code == 200, (code, text)\nprint(text)");
    let mut args = vec![method, url];
    args.extend(body);
    serde_json::from_str(&python(svc, &script, &args)).expect("control JSON")
}

fn new_key(svc: &Services, lifetime: u64) -> serde_json::Value {
    control(
        svc,
        "POST",
        &format!("{}/_test/service-account?lifetime={lifetime}", svc.var("CREDHOST_TEST_GCP_AUTH")),
        None,
    )
}

fn fault(svc: &Services, fault: serde_json::Value) {
    control(svc, "POST", &format!("{}/_proxy/fault", svc.var("CREDHOST_TEST_GCS_ENDPOINT")), Some(&fault.to_string()));
}

fn stats(svc: &Services, object: &str) -> serde_json::Value {
    control(svc, "GET", &format!("{}/_proxy/stats?object={object}", svc.var("CREDHOST_TEST_GCS_ENDPOINT")), None)
}

/// Who the token endpoint issued `token` to, or `None` when it is not current.
fn token_account(svc: &Services, token: &str) -> Option<String> {
    let script = format!("{HTTP}\nimport urllib.parse\ncode, text = call('GET', os.environ['CREDHOST_TEST_GCP_AUTH'] + '/_test/tokeninfo?access_token=' + urllib.parse.quote(sys.argv[1]))\nprint(json.loads(text)['account'] if code == 200 else '')");
    Some(python(svc, &script, &[token]).trim().to_owned()).filter(|a| !a.is_empty())
}

/// Python prelude: a google-cloud-storage client on the emulator itself.
const GCS_CLIENT: &str = r#"
import hashlib, os, sys
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
client = storage.Client(project=os.environ["CREDHOST_TEST_GCP_PROJECT"], credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": os.environ["CREDHOST_TEST_GCS_EMULATOR"]})
bucket = client.bucket(os.environ["CREDHOST_TEST_GCS_BUCKET"])
"#;

fn python_sha256(svc: &Services, name: &str) -> String {
    let script = format!("{GCS_CLIENT}\nprint(hashlib.sha256(bucket.blob(sys.argv[1]).download_as_bytes(checksum='crc32c')).hexdigest())");
    python(svc, &script, &[name]).trim().to_owned()
}

/// Frees the emulator's memory (it keeps every object in RAM, and the
/// services outlive test runs).
fn delete_object(svc: &Services, name: &str) {
    let script = format!(
        "{HTTP}\nimport urllib.parse\ncode, text = call('DELETE', os.environ['CREDHOST_TEST_GCS_EMULATOR'] + '/storage/v1/b/' + os.environ['CREDHOST_TEST_GCS_BUCKET'] + '/o/' + urllib.parse.quote(sys.argv[1], safe=''))\nassert code in (200, 204), (code, text)"
    );
    python(svc, &script, &[name]);
}

fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn decode_b64(s: &str) -> String {
    python(&Services::get(), "import base64,sys; print(base64.b64decode(sys.argv[1]).decode())", &[s])
        .trim_end()
        .to_owned()
}

#[test]
fn round_trips_including_half_gib() {
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    // One request, just under one chunk, four chunks, and 32 chunks.
    for (size, seed) in [(1000u64, 31u64), (CHUNK - 200, 32), (3 * CHUNK + 5, 33), (512 * MIB, 34)] {
        let name = unique("gcs-rt");
        write_zip(&ws.path("src.zip"), size, seed);
        let put = json_of(&run(&ws, &["upload", "src.zip", "--name", &name, "--json"], &[]).ok());
        assert_eq!((put["bucket"].as_str(), put["name"].as_str()), (Some("projects"), Some(name.as_str())));
        let got = json_of(&run(&ws, &["download", "projects", &name, "-o", "dst.zip", "--force", "--json"], &[]).ok());
        assert_eq!(got["checksum"], put["checksum"], "size {size}");
        assert_eq!(got["size"], put["size"]);
        assert_eq!(sha256(&ws.path("src.zip")), sha256(&ws.path("dst.zip")), "size {size}");
        let s = stats(&svc, &name);
        let resumable = size > CHUNK;
        assert_eq!(s["initiations"], u64::from(resumable), "{s}");
        assert_eq!(s["denied"], 0, "{s}");
        delete_object(&svc, &name);
    }
}

#[test]
fn an_upload_cut_mid_way_resumes_where_the_server_stands() {
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    let name = unique("gcs-resume");
    let src = ws.path("src.zip");
    write_zip(&src, 3 * CHUNK + 12_345, 41);
    let size = std::fs::metadata(&src).unwrap().len();
    // The second chunk: the server keeps its first 5 MiB, the answer is lost.
    fault(&svc, serde_json::json!({"object": name, "op": "upload", "n": 2, "mode": "partial", "keep": 5 * MIB}));
    run(&ws, &["upload", "src.zip", "--name", &name], &[]).ok();
    let s = stats(&svc, &name);
    assert_eq!(s["faults"], 1, "{s}");
    assert_eq!(s["initiations"], 1, "one session, resumed: {s}");
    assert!(s["status_queries"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["bytes_up"], size, "every byte sent once: {s}");
    run(&ws, &["download", "projects", &name, "-o", "back.zip"], &[]).ok();
    assert_eq!(sha256(&ws.path("back.zip")), sha256(&src));
    assert_eq!(python_sha256(&svc, &name), sha256(&src));
    delete_object(&svc, &name);
}

#[test]
fn a_cut_download_resumes_with_a_range() {
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    let name = unique("gcs-cut");
    write_zip(&ws.path("src.zip"), 20 * MIB, 42);
    run(&ws, &["upload", "src.zip", "--name", &name], &[]).ok();
    fault(&svc, serde_json::json!({"object": name, "op": "download", "n": 1, "mode": "cut", "keep": 7 * MIB}));
    run(&ws, &["download", "projects", &name, "-o", "back.zip"], &[]).ok();
    assert_eq!(sha256(&ws.path("back.zip")), sha256(&ws.path("src.zip")));
    let s = stats(&svc, &name);
    assert_eq!((s["faults"].as_u64(), s["range_gets"].as_u64()), (Some(1), Some(1)), "{s}");
    assert_eq!(s["bytes_down"].as_u64(), std::fs::metadata(ws.path("src.zip")).ok().map(|m| m.len()), "{s}");
    delete_object(&svc, &name);
}

#[test]
fn python_client_reads_what_credhost_wrote_and_the_reverse() {
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    let src = ws.path("src.zip");
    write_zip(&src, 2 * CHUNK + 77, 51);
    let name = unique("gcs-to-python");
    run(&ws, &["upload", "src.zip", "--name", &name], &[]).ok();
    assert_eq!(python_sha256(&svc, &name), sha256(&src));
    delete_object(&svc, &name);

    // The Python client's own resumable upload, in 4 MiB chunks.
    let name = unique("gcs-from-python");
    let put = format!("{GCS_CLIENT}\nbucket.blob(sys.argv[2], chunk_size=4 * 1024 * 1024).upload_from_filename(sys.argv[1], checksum='crc32c')");
    python(&svc, &put, &[src.to_str().unwrap(), &name]);
    run(&ws, &["download", "projects", &name, "-o", "back.zip"], &[]).ok();
    assert_eq!(sha256(&ws.path("back.zip")), sha256(&src));
    delete_object(&svc, &name);
}

#[test]
fn token_is_an_oauth2_access_token_for_googles_registries() {
    let svc = Services::get();
    let (ws, key) = keyed_ws(&svc, 3600);
    let v = json_of(&run(&ws, &["token", "--format", "json"], &[]).ok());
    assert_eq!(v["server"], "us-central1-docker.pkg.dev");
    assert_eq!(v["username"], "oauth2accesstoken");
    let token = v["password"].as_str().expect("password").to_owned();
    assert_eq!(token_account(&svc, &token).as_deref(), key["client_email"].as_str(), "a current token of this key");
    let expires = v["expires_at"].as_i64().expect("expires_at");
    assert!((unix_now() + 3500..=unix_now() + 3601).contains(&expires), "{expires}");

    let docker = run(&ws, &["token"], &[]).ok();
    let (user, secret) = decode_b64(docker.trim()).split_once(':').map(|(u, s)| (u.to_owned(), s.to_owned())).unwrap();
    assert_eq!(user, "oauth2accesstoken");
    assert!(token_account(&svc, &secret).is_some());

    let v = json_of(&run(&ws, &["token", "--registry", "https://eu.gcr.io", "--format", "json"], &[]).ok());
    assert_eq!(v["server"], "eu.gcr.io");
    let err = run(&ws, &["token", "--registry", "docker.io"], &[]).fails_with(3);
    assert!(err.contains("not an Artifact Registry or Container Registry host"), "{err}");
}

#[test]
fn the_proxy_refuses_requests_without_a_current_token() {
    // The emulator ignores Authorization: this is what makes the other
    // tests prove that the plugin sends a current token.
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    let token = json_of(&run(&ws, &["token", "--format", "json"], &[]).ok())["password"].as_str().unwrap().to_owned();
    let script = format!(
        "{HTTP}\nurl = os.environ['CREDHOST_TEST_GCS_ENDPOINT'] + '/storage/v1/b/' + os.environ['CREDHOST_TEST_GCS_BUCKET']\nfor auth in (None, 'Bearer ya29.made-up', 'Bearer ' + sys.argv[1]):\n    print(call('GET', url, headers={{'Authorization': auth}} if auth else {{}})[0])"
    );
    let codes: Vec<String> = python(&svc, &script, &[&token]).lines().map(str::to_owned).collect();
    assert_eq!(codes, ["401", "401", "200"]);
}

#[test]
fn invalid_keys_are_authentication_failures() {
    let svc = Services::get();
    // A well-formed key whose private half is not the one registered.
    let (ws, mut key) = keyed_ws(&svc, 3600);
    key["private_key"] = new_key(&svc, 3600)["private_key"].clone();
    std::fs::write(ws.path("key.json"), key.to_string()).unwrap();
    let pem_line = key["private_key"].as_str().unwrap().lines().nth(1).unwrap().to_owned();
    let err = run(&ws, &["token"], &[]).fails_with(4);
    assert!(err.contains("Invalid JWT Signature"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    write_zip(&ws.path("a.zip"), 1000, 1);
    let err = run(&ws, &["upload", "a.zip", "--name", &unique("bad-key")], &[]).fails_with(4);
    assert!(!err.contains(&pem_line) && !err.contains("PRIVATE KEY"), "{err}");
    let check = run(&ws, &["check"], &[]);
    check.fails_with(6);
    assert!(check.stdout().contains("FAIL registry") && check.stdout().contains("FAIL storage"), "{}", check.stdout());

    // Not a key at all.
    std::fs::write(ws.path("key.json"), "{\"type\": \"service_account\", \"client_email\": \"x@y\"}").unwrap();
    let err = run(&ws, &["token"], &[]).fails_with(4);
    assert!(err.contains("invalid credentials in key file") && err.contains("no `private_key` field"), "{err}");

    // A key file that is not there is a settings error, pointing at the line.
    std::fs::remove_file(ws.path("key.json")).unwrap();
    let err = run(&ws, &["token"], &[]).fails_with(2);
    assert!(err.contains("plugins.toml:") && err.contains("credentials.service_account_file"), "{err}");
}

#[test]
fn tokens_are_refreshed_before_they_expire_during_an_upload() {
    let svc = Services::get();
    let (ws, key) = keyed_ws(&svc, 4);
    let name = unique("gcs-refresh");
    write_zip(&ws.path("src.zip"), 3 * CHUNK + 5, 61);
    // Every chunk takes 2 s at the proxy: the 4 s token cannot last.
    fault(
        &svc,
        serde_json::json!({"object": name, "op": "upload", "n": 1, "mode": "delay", "delay": 2.0, "every": true}),
    );
    run(&ws, &["upload", "src.zip", "--name", &name], &[]).ok();
    let s = stats(&svc, &name);
    assert_eq!(s["denied"], 0, "no request carried an expired token: {s}");
    assert!(s["tokens"].as_u64().unwrap() >= 2, "the token was replaced mid-upload: {s}");
    let email = key["client_email"].as_str().unwrap();
    let issued =
        control(&svc, "GET", &format!("{}/_test/account?email={email}", svc.var("CREDHOST_TEST_GCP_AUTH")), None);
    assert!(issued["issued"].as_u64().unwrap() >= 2, "{issued}");
    run(&ws, &["download", "projects", &name, "-o", "back.zip"], &[]).ok();
    assert_eq!(sha256(&ws.path("back.zip")), sha256(&ws.path("src.zip")));
    delete_object(&svc, &name);
}

#[test]
fn metadata_server_credentials_pinned_and_as_the_last_resort() {
    let svc = Services::get();
    let metadata = svc.var("CREDHOST_TEST_GCP_METADATA_HOST");
    let env = [("GCE_METADATA_HOST", metadata.as_str())];
    for credentials in [Some("\"metadata\""), None] {
        let ws = gcp_ws(&svc, credentials);
        let check = run(&ws, &["check"], &env);
        assert!(check.ok().contains(&format!("access token from metadata server at {metadata}")), "{}", check.stdout());
        let name = unique("gcs-metadata");
        write_zip(&ws.path("a.zip"), 3000, 71);
        run(&ws, &["upload", "a.zip", "--name", &name], &env).ok();
        run(&ws, &["download", "projects", &name, "-o", "b.zip"], &env).ok();
        assert_eq!(sha256(&ws.path("a.zip")), sha256(&ws.path("b.zip")));
        let creds = json_of(&run(&ws, &["credentials", "--format", "json"], &env).ok());
        assert!(
            creds.get("GOOGLE_APPLICATION_CREDENTIALS").is_none(),
            "the machine's credentials stay with the machine: {creds}"
        );
        let token =
            json_of(&run(&ws, &["token", "--format", "json"], &env).ok())["password"].as_str().unwrap().to_owned();
        assert!(token_account(&svc, &token).unwrap().starts_with("metadata-default@"));
    }
    // With nothing at all, the error lists what was looked for.
    let ws = gcp_ws(&svc, None);
    let err = run(&ws, &["token"], &[("GCE_METADATA_HOST", "127.0.0.1:9")]).fails_with(4);
    assert!(err.contains("no credentials found") && err.contains("GOOGLE_APPLICATION_CREDENTIALS is not set"), "{err}");
}

#[test]
fn application_default_credentials_files() {
    let svc = Services::get();
    // GOOGLE_APPLICATION_CREDENTIALS naming a service-account key file.
    let ws = gcp_ws(&svc, Some("\"adc\""));
    let key = new_key(&svc, 3600);
    std::fs::write(ws.path("sa.json"), key.to_string()).unwrap();
    let sa = ws.path("sa.json").display().to_string();
    let t = json_of(&run(&ws, &["token", "--format", "json"], &[("GOOGLE_APPLICATION_CREDENTIALS", &sa)]).ok());
    assert_eq!(token_account(&svc, t["password"].as_str().unwrap()).as_deref(), key["client_email"].as_str());

    // gcloud's authorized_user file in its configuration directory.
    let user = control(&svc, "POST", &format!("{}/_test/authorized-user", svc.var("CREDHOST_TEST_GCP_AUTH")), None);
    std::fs::create_dir_all(ws.path("gcloud")).unwrap();
    std::fs::write(ws.path("gcloud/application_default_credentials.json"), user.to_string()).unwrap();
    let gcloud = ws.path("gcloud").display().to_string();
    let env = [("CLOUDSDK_CONFIG", gcloud.as_str())];
    let name = unique("gcs-adc");
    write_zip(&ws.path("a.zip"), 5000, 81);
    run(&ws, &["upload", "a.zip", "--name", &name], &env).ok();
    let creds = json_of(&run(&ws, &["credentials", "--format", "json", "--show-secrets"], &env).ok());
    let handed: serde_json::Value =
        serde_json::from_str(creds["GOOGLE_APPLICATION_CREDENTIALS"].as_str().unwrap()).unwrap();
    assert_eq!(handed, user);

    // Neither: a clear authentication error.
    let err = run(&ws, &["token"], &[]).fails_with(4);
    assert!(err.contains("no Application Default Credentials"), "{err}");
}

#[test]
fn a_key_held_inline_in_an_environment_variable() {
    let svc = Services::get();
    let key = new_key(&svc, 3600);
    let json = key.to_string();
    for (credentials, var) in [
        (Some("{ service_account_json_env = \"DEPLOY_KEY\" }"), "DEPLOY_KEY"),
        (None, "GOOGLE_APPLICATION_CREDENTIALS"),
    ] {
        let ws = gcp_ws(&svc, credentials);
        let env = [(var, json.as_str())];
        let t = json_of(&run(&ws, &["token", "--format", "json"], &env).ok());
        assert_eq!(
            token_account(&svc, t["password"].as_str().unwrap()).as_deref(),
            key["client_email"].as_str(),
            "{var}"
        );
        let creds = json_of(&run(&ws, &["credentials", "--format", "json", "--show-secrets"], &env).ok());
        assert_eq!(creds["GOOGLE_APPLICATION_CREDENTIALS"], json.as_str());
    }
    let ws = gcp_ws(&svc, Some("{ service_account_json_env = \"DEPLOY_KEY\" }"));
    let err = run(&ws, &["token"], &[]).fails_with(2);
    assert!(err.contains("DEPLOY_KEY") && err.contains("is not set"), "{err}");
}

#[test]
fn build_job_credentials_keep_the_original_names() {
    let svc = Services::get();
    let (ws, key) = keyed_ws(&svc, 3600);
    let v = json_of(&run(&ws, &["credentials", "--format", "json", "--show-secrets"], &[]).ok());
    assert_eq!(v["GOOGLE_APPLICATION_PROJECT_ID"], svc.var("CREDHOST_TEST_GCP_PROJECT").as_str());
    assert_eq!(v["GOOGLE_APPLICATION_LOCATION"], "us-central1");
    assert_eq!(v["PROJECTS_BUCKET"], "projects");
    assert_eq!(v["REGISTRY"], "us-central1-docker.pkg.dev");
    let handed: serde_json::Value =
        serde_json::from_str(v["GOOGLE_APPLICATION_CREDENTIALS"].as_str().unwrap()).unwrap();
    assert_eq!(handed, key);
    let decoded = decode_b64(v["REGISTRY_TOKEN"].as_str().unwrap());
    let (user, token) = decoded.split_once(':').unwrap();
    assert_eq!(user, "oauth2accesstoken");
    assert_eq!(token_account(&svc, token).as_deref(), key["client_email"].as_str());

    let env = run(&ws, &["credentials"], &[]).ok();
    for line in [
        "GOOGLE_APPLICATION_CREDENTIALS=<redacted>",
        "REGISTRY_TOKEN=<redacted>",
        "GOOGLE_APPLICATION_LOCATION=us-central1",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in {env}");
    }
}

#[test]
fn check_plugins_and_a_missing_bucket() {
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    let out = run(&ws, &["check"], &[]).ok();
    assert!(out.contains("ok   storage: gcs bucket gs://projects at"), "{out}");
    assert!(out.contains("ok   registry: us-central1-docker.pkg.dev: access token from service account"), "{out}");
    let plugins = json_of(&run(&ws, &["plugins", "--json"], &[]).ok());
    let row = plugins.as_array().unwrap().iter().find(|r| r["name"] == "gcp").expect("gcp row");
    assert_eq!(row["status"], "loaded");

    let text = std::fs::read_to_string(ws.path("plugins.toml"))
        .unwrap()
        .replace("bucket = \"projects\"", "bucket = \"no-such-bucket\"");
    ws.write_config(&text);
    let check = run(&ws, &["check"], &[]);
    check.fails_with(6);
    assert!(
        check.stdout().contains("FAIL storage: gcs bucket gs://no-such-bucket") && check.stdout().contains("404"),
        "{}",
        check.stdout()
    );
    assert!(check.stdout().contains("ok   registry"), "{}", check.stdout());
}

#[test]
fn bad_settings_name_the_key_and_line() {
    let svc = Services::get();
    let ws = gcp_ws(&svc, Some("\"gcloud\""));
    let err = run(&ws, &["check"], &[]).fails_with(2);
    assert!(err.contains("plugins.toml:") && err.contains("unknown variant `gcloud`"), "{err}");
    let text = std::fs::read_to_string(ws.path("plugins.toml"))
        .unwrap()
        .replace("credentials = \"gcloud\"", "colour = \"red\"");
    ws.write_config(&text);
    let err = run(&ws, &["check"], &[]).fails_with(2);
    assert!(err.contains("unknown field `colour`"), "{err}");
    let text = text.replace("colour = \"red\"", "").replace("storage_endpoint = \"", "storage_endpoint = \"ftp://");
    ws.write_config(&text);
    let err = run(&ws, &["check"], &[]).fails_with(2);
    assert!(err.contains("storage_endpoint"), "{err}");
}

#[test]
fn a_missing_object_is_not_found_and_leaves_nothing() {
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    let err = run(&ws, &["download", "projects", &unique("gcs-missing"), "-o", "x.zip"], &[]).fails_with(3);
    assert!(err.contains("no object gs://projects/"), "{err}");
    assert!(!ws.path("x.zip").exists());
}

#[test]
fn secrets_stay_out_of_output_and_logs() {
    let svc = Services::get();
    let (ws, key) = keyed_ws(&svc, 3600);
    let pem: Vec<String> = key["private_key"].as_str().unwrap().lines().skip(1).take(3).map(str::to_owned).collect();
    write_zip(&ws.path("a.zip"), CHUNK + 3, 91);
    let name = unique("gcs-quiet");
    for args in [
        vec!["-vvv", "upload", "a.zip", "--name", name.as_str()],
        vec!["-vvv", "download", "projects", name.as_str(), "-o", "b.zip"],
        vec!["-vvv", "credentials"],
        vec!["-vvv", "credentials", "--format", "json"],
        vec!["-vvv", "check"],
    ] {
        let r = run(&ws, &args, &[]);
        let all = r.ok() + &r.stderr();
        // Every token the test endpoints issue starts like this.
        assert!(!all.contains("ya29."), "token in output of {args:?}");
        assert!(
            !all.contains("PRIVATE KEY") && pem.iter().all(|l| !all.contains(l.as_str())),
            "key in output of {args:?}"
        );
    }
}

/// A reader of `len` pseudo-random bytes: a request body of unknown length.
struct Body {
    left: u64,
    x: u64,
}

impl std::io::Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            *b = self.x as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn streamed_uploads_resume_and_refuse_corrupted_content() {
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let good = unique("gcs-stream");
    let bad = unique("gcs-stream-corrupt");
    let len = 2 * CHUNK + 999;
    fault(&svc, serde_json::json!({"object": good, "op": "upload", "n": 2, "mode": "partial", "keep": 3 * MIB}));
    fault(&svc, serde_json::json!({"object": bad, "op": "upload", "n": 3, "mode": "corrupt", "keep": 10}));
    let (put, corrupt) = rt.block_on(async {
        let host = credhost::Host::from_file(&ws.path("plugins.toml"), None).unwrap();
        let provider = host.active().await.unwrap();
        let put = provider.upload_reader(&good, Body { left: len, x: 5 }, None, None).await;
        let corrupt = provider.upload_reader(&bad, Body { left: len, x: 5 }, None, None).await;
        (put, corrupt)
    });
    let put = put.expect("stream upload");
    assert_eq!(put.size, len);
    let s = stats(&svc, &good);
    assert_eq!(
        (s["faults"].as_u64(), s["initiations"].as_u64(), s["bytes_up"].as_u64()),
        (Some(1), Some(1), Some(len)),
        "{s}"
    );
    run(&ws, &["download", "projects", &good, "-o", "good.bin"], &[]).ok();
    let mut expected = Vec::new();
    std::io::Read::read_to_end(&mut Body { left: len, x: 5 }, &mut expected).unwrap();
    assert!(std::fs::read(ws.path("good.bin")).unwrap() == expected, "downloaded bytes differ");
    delete_object(&svc, &good);

    let err = corrupt.expect_err("a corrupted stream upload must fail");
    assert_eq!(err.plugin_error().map(|e| e.kind.name()), Some("integrity"), "{err}");
    assert!(err.to_string().contains("crc32c mismatch"), "{err}");
    // The mismatching object was taken away again.
    std::thread::sleep(Duration::from_millis(100));
    run(&ws, &["download", "projects", &bad, "-o", "bad.bin"], &[]).fails_with(3);
}
