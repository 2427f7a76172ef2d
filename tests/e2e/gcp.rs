//! The gcp plugin through the `credhost` binary: GCS on gcp-storage-emulator
//! behind the proxy that refuses requests without a current token, keys
//! issued by the local OAuth token endpoint, the metadata-server stand-in,
//! and the Python google-cloud-storage client as a second real client.

use std::time::Duration;

use credhost_e2e::{gcp::*, *};

const MIB: u64 = 1 << 20;
/// The plugin's resumable chunk size.
const CHUNK: u64 = 16 * MIB;

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
    assert_eq!(err.plugin_failure().map(|e| e.plugin_kind), Some("integrity"), "{err}");
    assert!(err.to_string().contains("crc32c mismatch"), "{err}");
    // The mismatching object was taken away again.
    std::thread::sleep(Duration::from_millis(100));
    run(&ws, &["download", "projects", &bad, "-o", "bad.bin"], &[]).fails_with(3);
}

/// Without a key, a V4 signed URL is signed through the IAM Credentials
/// API's signBlob as the metadata server's account; the proxy in front of
/// the emulator checks the signature as GCS does. User credentials cannot sign.
#[test]
fn signed_urls_without_a_key_go_through_sign_blob() {
    let svc = Services::get();
    let metadata = svc.var("CREDHOST_TEST_GCP_METADATA_HOST");
    let env = [("GCE_METADATA_HOST", metadata.as_str())];
    let ws = gcp_ws(&svc, Some("\"metadata\""));
    let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    ws.write_config(&format!("{text}iam_endpoint = \"{}\"\n", svc.var("CREDHOST_TEST_GCP_AUTH")));
    let account = format!("metadata-default@{}.iam.gserviceaccount.com", svc.var("CREDHOST_TEST_GCP_PROJECT"));
    let signed_before =
        control(&svc, "GET", &format!("{}/_test/account?email={account}", svc.var("CREDHOST_TEST_GCP_AUTH")), None)
            ["signed"]
            .as_u64()
            .unwrap();
    let name = unique("gcs-signblob");
    write_zip(&ws.path("a.zip"), 5000, 81);
    run(&ws, &["upload", "a.zip", "--name", &name], &env).ok();
    let url = run(&ws, &["presign", "get", "projects", &name], &env).ok();
    let (_, code) = curl(&["-o", ws.path("got.zip").to_str().unwrap(), url.trim()]);
    assert_eq!(code, "200");
    assert_eq!(sha256(&ws.path("got.zip")), sha256(&ws.path("a.zip")));
    let signed_after =
        control(&svc, "GET", &format!("{}/_test/account?email={account}", svc.var("CREDHOST_TEST_GCP_AUTH")), None)
            ["signed"]
            .as_u64()
            .unwrap();
    assert_eq!(signed_after, signed_before + 1, "signed through signBlob");
    delete_object(&svc, &name);

    let user = control(&svc, "POST", &format!("{}/_test/authorized-user", svc.var("CREDHOST_TEST_GCP_AUTH")), None);
    let ws = gcp_ws(&svc, Some("\"adc\""));
    std::fs::write(ws.path("user.json"), user.to_string()).unwrap();
    let err = run(
        &ws,
        &["presign", "get", "projects", "x.zip"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", ws.path("user.json").to_str().unwrap())],
    )
    .fails_with(1);
    assert!(err.contains("user credentials cannot sign"), "{err}");
}

/// A resumable upload that fails after its session began: the session URI
/// (a bearer credential for a week) appears nowhere, at any verbosity.
#[test]
fn a_failed_resumable_upload_never_shows_its_session_uri() {
    let svc = Services::get();
    let (ws, _) = keyed_ws(&svc, 3600);
    write_zip(&ws.path("src.zip"), 2 * CHUNK + 5, 61);
    for (args, env) in [
        (&["upload", "src.zip", "--name"][..], &[][..]),
        (&["-vvv", "upload", "src.zip", "--name"], &[]),
        (&["upload", "src.zip", "--name"], &[("CREDHOST_LOG", "trace")]),
    ] {
        let name = unique("gcs-session");
        fault(&svc, serde_json::json!({"object": name, "op": "upload", "n": 2, "mode": "error", "every": true}));
        let full: Vec<&str> = args.iter().copied().chain([name.as_str()]).collect();
        let r = run(&ws, &full, env);
        assert_ne!(r.code(), 0, "{}", r.stderr());
        let all = r.stdout() + &r.stderr();
        assert!(stats(&svc, &name)["initiations"].as_u64() >= Some(1), "a session was opened");
        for leak in ["upload_id", "upload_type=resumable", "/upload/storage/v1"] {
            assert!(!all.contains(leak), "{full:?} {env:?} showed the session URI ({leak}): {all}");
        }
    }
}
