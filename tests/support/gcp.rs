//! The gcp plugin's test services: workspaces with generated keys, and the
//! control API of the token endpoint and of the proxy in front of the
//! emulator (faults, statistics).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::*;

/// Variables that would let the machine's own Google credentials in.
pub const GOOGLE_VARS: [&str; 4] =
    ["GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "CLOUDSDK_CONFIG", "DEPLOY_KEY"];

/// A workspace with the gcp plugin active; `credentials` is the TOML value
/// of the `credentials` setting, or `None` for the default order.
pub fn gcp_ws(svc: &Services, credentials: Option<&str>) -> Workspace {
    let mut ws = Workspace::new();
    // The machine's own Google credentials stay out, and so does a gcloud file.
    for k in GOOGLE_VARS {
        ws.unset_env(k);
    }
    let home = ws.dir.path().display().to_string();
    ws.set_env("HOME", &home);
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
pub fn keyed_ws(svc: &Services, lifetime: u64) -> (Workspace, serde_json::Value) {
    let ws = gcp_ws(svc, Some("{ service_account_file = \"key.json\" }"));
    let key = new_key(svc, lifetime);
    std::fs::write(ws.path("key.json"), key.to_string()).unwrap();
    (ws, key)
}

/// Runs credhost with the Google variables of this machine removed, `HOME`
/// in the workspace (no gcloud file), and `env` set.
pub fn run(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Run {
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

pub const HTTP: &str = r#"
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
pub fn control(svc: &Services, method: &str, url: &str, body: Option<&str>) -> serde_json::Value {
    let script = format!("{HTTP}\ncode, text = call(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)\nassert code == 200, (code, text)\nprint(text)");
    let mut args = vec![method, url];
    args.extend(body);
    serde_json::from_str(&python(svc, &script, &args)).expect("control JSON")
}

pub fn new_key(svc: &Services, lifetime: u64) -> serde_json::Value {
    control(
        svc,
        "POST",
        &format!("{}/_test/service-account?lifetime={lifetime}", svc.var("CREDHOST_TEST_GCP_AUTH")),
        None,
    )
}

pub fn fault(svc: &Services, fault: serde_json::Value) {
    control(svc, "POST", &format!("{}/_proxy/fault", svc.var("CREDHOST_TEST_GCS_ENDPOINT")), Some(&fault.to_string()));
}

pub fn stats(svc: &Services, object: &str) -> serde_json::Value {
    control(svc, "GET", &format!("{}/_proxy/stats?object={object}", svc.var("CREDHOST_TEST_GCS_ENDPOINT")), None)
}

/// Who the token endpoint issued `token` to, or `None` when it is not current.
pub fn token_account(svc: &Services, token: &str) -> Option<String> {
    let script = format!("{HTTP}\nimport urllib.parse\ncode, text = call('GET', os.environ['CREDHOST_TEST_GCP_AUTH'] + '/_test/tokeninfo?access_token=' + urllib.parse.quote(sys.argv[1]))\nprint(json.loads(text)['account'] if code == 200 else '')");
    Some(python(svc, &script, &[token]).trim().to_owned()).filter(|a| !a.is_empty())
}

/// How many access tokens the token endpoint and the metadata server have
/// issued so far: remember it before a test runs, then ask
/// [`tokens_issued_since`] what was issued meanwhile.
pub fn tokens_issued(svc: &Services) -> u64 {
    control(svc, "GET", &format!("{}/_test/issued?since=0", svc.var("CREDHOST_TEST_GCP_AUTH")), None)["next"]
        .as_u64()
        .expect("the count of issued tokens")
}

/// Every access token issued since the endpoint had issued `since` (by any
/// process: a command under test fetches tokens of its own, which no other
/// process ever sees).
pub fn tokens_issued_since(svc: &Services, since: u64) -> Vec<String> {
    let v = control(svc, "GET", &format!("{}/_test/issued?since={since}", svc.var("CREDHOST_TEST_GCP_AUTH")), None);
    v["tokens"].as_array().expect("a list of tokens").iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

/// The forms an access token takes in output: itself, its base64, and the
/// registry credentials built from it (docker's `base64(user:token)`, user
/// `oauth2accesstoken`).
pub fn token_forms(token: &str) -> [String; 3] {
    [token.to_owned(), base64(token), base64(&format!("oauth2accesstoken:{token}"))]
}

/// Python prelude: a google-cloud-storage client on the emulator itself.
pub const GCS_CLIENT: &str = r#"
import hashlib, os, sys
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
client = storage.Client(project=os.environ["CREDHOST_TEST_GCP_PROJECT"], credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": os.environ["CREDHOST_TEST_GCS_EMULATOR"]})
bucket = client.bucket(os.environ["CREDHOST_TEST_GCS_BUCKET"])
"#;

pub fn python_sha256(svc: &Services, name: &str) -> String {
    let script = format!("{GCS_CLIENT}\nprint(hashlib.sha256(bucket.blob(sys.argv[1]).download_as_bytes(checksum='crc32c')).hexdigest())");
    python(svc, &script, &[name]).trim().to_owned()
}

/// A script deleting the object `sys.argv[1]` from the GCS server at
/// `CREDHOST_TEST_GCS_EMULATOR`.
pub fn delete_object_script() -> String {
    format!(
        "{HTTP}\nimport urllib.parse\ncode, text = call('DELETE', os.environ['CREDHOST_TEST_GCS_EMULATOR'] + '/storage/v1/b/' + os.environ['CREDHOST_TEST_GCS_BUCKET'] + '/o/' + urllib.parse.quote(sys.argv[1], safe=''))\nassert code in (200, 204), (code, text)"
    )
}

/// Frees the emulator's memory (it keeps every object in RAM, and the
/// services outlive test runs).
pub fn delete_object(svc: &Services, name: &str) {
    python(svc, &delete_object_script(), &[name]);
}

/// `plugins.toml` text of a gcp workspace moved onto fake-gcs-server
/// (behind its token-checking proxy).
pub fn on_fake_gcs(svc: &Services, config: &str) -> String {
    let from = format!("storage_endpoint = \"{}\"", svc.var("CREDHOST_TEST_GCS_ENDPOINT"));
    assert!(config.contains(&from), "no storage_endpoint in {config}");
    config.replace(&from, &format!("storage_endpoint = \"{}\"", svc.var("CREDHOST_TEST_FAKE_GCS_ENDPOINT")))
}

pub fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn decode_b64(s: &str) -> String {
    python(&Services::get(), "import base64,sys; print(base64.b64decode(sys.argv[1]).decode())", &[s])
        .trim_end()
        .to_owned()
}
