//! Live platform switching: the library's `LiveHost`, and the example service
//! flipping between `local` (filesystem store) and `aws` (S3 on SeaweedFS,
//! ECR on moto) under concurrent uploads.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use credhost_e2e::*;

fn status(addr: &str) -> serde_json::Value {
    let (body, code) = curl(&[&format!("http://{addr}/platform")]);
    assert_eq!(code, "200", "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `GET /platform` satisfies `done`; returns the last status.
#[track_caller]
fn wait_status(addr: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(addr);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; status: {s}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Both platforms in one file: `local` on the filesystem (ws/store) and `aws`
/// on SeaweedFS, so each upload's platform shows in where it landed.
fn two_platforms(ws: &Workspace, svc: &Services, platform: &str, aws_bucket: &str) -> String {
    let aws = std::fs::read_to_string(ws.path("aws.toml")).unwrap();
    let aws = aws
        .replace("platform = \"aws\"", &format!("platform = \"{platform}\""))
        .replace("bucket = \"projects\"", &format!("bucket = \"{aws_bucket}\""));
    format!(
        "{aws}\n[plugins.local.settings]\nregistry = {{ url = \"http://{}\", auth = \"none\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n",
        svc.var("CREDHOST_TEST_REGISTRY_OPEN")
    )
}

/// Replaces plugins.toml the way editors and config tools do: alternately in
/// place (truncate and write) and by renaming a new file over it.
fn edit(ws: &Workspace, text: &str, n: usize) {
    let path = ws.path("plugins.toml");
    if n.is_multiple_of(2) {
        std::fs::write(&path, text).unwrap();
    } else {
        let tmp = ws.path(".plugins.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

struct Upload {
    name: String,
    source: PathBuf,
    platform: String,
    /// Generations seen just before the request and just after the answer.
    before: u64,
    after: u64,
}

#[test]
fn example_service_keeps_serving_while_platforms_flip_under_load() {
    let svc = Services::get();
    let ws = Workspace::aws(&svc, &svc.var("CREDHOST_TEST_S3_ENDPOINT"), "");
    std::fs::rename(ws.path("plugins.toml"), ws.path("aws.toml")).unwrap();
    let good = |platform: &str| two_platforms(&ws, &svc, platform, "projects");
    ws.write_config(&good("local"));

    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(ws.path("serve.log")).unwrap();
    let _server = Server(
        ws.program(release_dir().join("examples/serve"), &[ws.path("plugins.toml").to_str().unwrap(), &addr])
            .env("SERVE_WATCH_INTERVAL_MS", "50")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("examples/serve is missing: cargo build --release --examples"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "example service did not start: {}",
            std::fs::read_to_string(ws.path("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(&addr)["platform"], "local");

    // A few archives of 2-9 MiB; each upload is rate-limited so that many
    // are still running when the platform flips under them.
    let sources: Vec<PathBuf> = (0..4u64)
        .map(|i| {
            let p = ws.path(&format!("src-{i}.zip"));
            write_zip(&p, (2 + 2 * i) << 20, 1000 + i);
            p
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<Upload>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, done, failures, addr, sources) =
                (stop.clone(), done.clone(), failures.clone(), addr.clone(), sources.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let source = sources[(w + n) % sources.len()].clone();
                    let name = unique(&format!("switch-w{w}"));
                    n += 1;
                    let before = status(&addr)["generation"].as_u64().unwrap();
                    let (body, code) = curl(&[
                        "--limit-rate",
                        "12M",
                        "--data-binary",
                        &format!("@{}", source.display()),
                        &format!("http://{addr}/projects/{name}"),
                    ]);
                    let after = status(&addr)["generation"].as_u64().unwrap();
                    if code != "201" {
                        failures.lock().unwrap().push(format!("{name}: HTTP {code}: {body}"));
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(v["size"], std::fs::metadata(&source).unwrap().len(), "{body}");
                    let platform = v["platform"].as_str().unwrap().to_owned();
                    done.lock().unwrap().push(Upload { name, source, platform, before, after });
                }
            })
        })
        .collect();

    // 20 flips, each confirmed by the service before the next.
    let mut platform = "local";
    for flip in 1..=20u64 {
        platform = if platform == "local" { "aws" } else { "local" };
        edit(&ws, &good(platform), flip as usize);
        wait_status(&addr, &format!("flip {flip} to {platform}"), |s| {
            s["generation"] == flip && s["platform"] == platform
        });
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(platform, "local");

    // Broken edits are rejected, with the reason, and `local` keeps serving.
    let broken = [
        ("platform = \"aws\"\n[plugins.aws\n".to_owned(), "plugins.toml:2:"),
        (good("gpc"), "unknown platform `gpc`"),
        // A bucket name of its own: SeaweedFS creates buckets on upload, so a
        // broken run must not create one that other tests expect to be missing.
        (two_platforms(&ws, &svc, "aws", unique("missing").trim_end_matches(".zip")), "check of platform `aws` failed"),
    ];
    for (i, (text, why)) in broken.iter().enumerate() {
        edit(&ws, text, i);
        let s = wait_status(&addr, why, |s| s["last_error"].as_str().is_some_and(|e| e.contains(why)));
        assert_eq!((s["platform"].as_str(), s["generation"].as_u64()), (Some("local"), Some(20)), "{s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Back to what is being served: the error clears without a switch.
    edit(&ws, &good("local"), 0);
    let s = wait_status(&addr, "the error to clear", |s| s["last_error"].is_null());
    assert_eq!(s["generation"], 20);
    std::thread::sleep(Duration::from_millis(300));

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("an upload worker panicked");
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} uploads failed: {failures:#?}", failures.len());
    let uploads = std::mem::take(&mut *done.lock().unwrap());
    let on = |p: &str| uploads.iter().filter(|u| u.platform == p).count();
    assert!(on("local") >= 3 && on("aws") >= 3, "uploads: {} local, {} aws", on("local"), on("aws"));
    let spanning = uploads.iter().filter(|u| u.before != u.after).count();
    eprintln!(
        "{} uploads: {} local, {} aws, {spanning} running across a switch",
        uploads.len(),
        on("local"),
        on("aws")
    );
    assert!(spanning >= 1, "no upload was running while the platform switched");

    // Every upload is whole on the platform it reported, and only there.
    let names: Vec<&str> = uploads.iter().map(|u| u.name.as_str()).collect();
    let in_s3: BTreeMap<String, Option<String>> = serde_json::from_str(&python(
        &svc,
        &format!(
            "{BOTO3_CLIENT}
import hashlib, json
out = {{}}
for name in sys.argv[1:]:
    try:
        out[name] = hashlib.sha256(s3.get_object(Bucket=bucket, Key=name)['Body'].read()).hexdigest()
    except s3.exceptions.NoSuchKey:
        out[name] = None
print(json.dumps(out))"
        ),
        &names,
    ))
    .unwrap();
    for u in &uploads {
        let want = sha256(&u.source);
        let local = ws.path("store/projects").join(&u.name);
        let (here, there) = match u.platform.as_str() {
            "local" => (Path::new(&local).exists().then(|| sha256(&local)), in_s3[&u.name].clone()),
            "aws" => (in_s3[&u.name].clone(), local.exists().then(|| sha256(&local))),
            other => panic!("unknown platform {other}"),
        };
        assert_eq!(here.as_deref(), Some(want.as_str()), "{} is not whole on {}", u.name, u.platform);
        assert_eq!(there, None, "{} also landed on the other platform", u.name);
        // No switch while it ran: it used the platform of that generation.
        if u.before == u.after {
            let expected = if u.before % 2 == 0 { "local" } else { "aws" };
            assert_eq!(u.platform, expected, "{}: generation {} is {expected}", u.name, u.before);
        }
    }
}

#[test]
fn live_host_swaps_only_checked_configurations() {
    let svc = Services::get();
    let ws = Workspace::new();
    let config = |root: &str, registry: &str| {
        format!(
            "platform = \"local\"\nplugin_dir = {:?}\n\n[plugins.local.settings]\nregistry = {{ url = \"http://{registry}\", auth = \"none\" }}\nstorage = {{ kind = \"fs\", root = \"{root}\", bucket = \"projects\" }}\n",
            release_dir().display().to_string()
        )
    };
    let open = svc.var("CREDHOST_TEST_REGISTRY_OPEN");
    ws.write_config(&config("a", &open));
    let zip = ws.path("p.zip");
    write_zip(&zip, 10_000, 5);
    let path = ws.path("plugins.toml");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let live = credhost::LiveHost::open(&path, None).await.unwrap();
        let mut events = live.subscribe();
        let first = live.provider();

        ws.write_config(&config("b", &open));
        assert!(live.reload().await.unwrap(), "new settings, new provider");
        assert!(events.has_changed().unwrap());
        assert_eq!(
            *events.borrow_and_update(),
            credhost::SwitchStatus { generation: 1, platform: "local".into(), last_error: None, process: None }
        );
        // A handle taken before the switch keeps its provider; new ones get the new one.
        first
            .upload_file(&zip, &credhost::UploadOptions { name: Some("old.zip".into()), ..Default::default() })
            .await
            .unwrap();
        live.provider()
            .upload_file(&zip, &credhost::UploadOptions { name: Some("new.zip".into()), ..Default::default() })
            .await
            .unwrap();
        assert!(ws.path("a/projects/old.zip").exists() && ws.path("b/projects/new.zip").exists());

        // A syntax error: rejected with file and line, `b` keeps serving.
        ws.write_config(
            &config("c", &open).replace("[plugins.local.settings]", "[plugins.local.settings]\ncolour = \"red\""),
        );
        let e = live.reload().await.unwrap_err();
        assert_eq!(e.kind(), credhost::ErrorKind::Config);
        assert!(e.to_string().contains("plugins.toml:5:") && e.to_string().contains("colour"), "{e}");
        let s = live.status();
        assert_eq!(s.generation, 1);
        assert!(s.last_error.as_deref().is_some_and(|m| m.contains("colour")), "{s:?}");

        // A configuration whose check fails (registry unreachable): rejected too.
        ws.write_config(&config("c", "127.0.0.1:1"));
        let e = live.reload().await.unwrap_err();
        assert_eq!(e.kind(), credhost::ErrorKind::CheckFailed, "{e}");
        assert!(e.to_string().contains("check of platform `local` failed: registry"), "{e}");
        live.provider()
            .upload_file(&zip, &credhost::UploadOptions { name: Some("still-b.zip".into()), ..Default::default() })
            .await
            .unwrap();
        assert!(ws.path("b/projects/still-b.zip").exists());
        assert!(!ws.path("c").exists());

        // Only a comment changed: no new provider, and nothing is wrong any more.
        ws.write_config(&format!("# a comment\n{}", config("b", &open)));
        assert!(!live.reload().await.unwrap());
        assert_eq!(
            live.status(),
            credhost::SwitchStatus { generation: 1, platform: "local".into(), last_error: None, process: None }
        );
    });
}

/// A `[registries]` edit keeps the provider (and its token cache) and still
/// reroutes: a host newly mapped to the instance is asked of its plugin as
/// the instance's own registry, and a host no longer mapped is the plugin's
/// to refuse, through `LiveHost::registries()`.
#[test]
fn a_registries_edit_reroutes_a_live_host_without_a_new_provider() {
    let svc = Services::get();
    let ws = Workspace::local_basic(&svc);
    let base = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
    let path = ws.path("plugins.toml");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        ws.apply_env();
        let live = credhost::LiveHost::open(&path, None).await.unwrap();
        let first = live.provider();
        let ask = |host: &'static str| {
            let registries = live.registries();
            async move { registries.auth(Some(host), None, credhost::AuthForm::Any).await }
        };
        let err = ask("mirror.example:5000").await.unwrap_err();
        assert_eq!(err.kind(), credhost::ErrorKind::NotFound, "not mapped yet: the plugin refuses it: {err}");

        ws.write_config(&format!("{base}\n[registries]\n\"mirror.example:5000\" = \"local\"\n"));
        assert!(!live.reload().await.unwrap(), "a [registries] edit keeps the provider");
        let auth = ask("mirror.example:5000").await.unwrap().expect("the basic registry has credentials");
        assert_eq!(
            (auth.server.as_str(), auth.username.as_str()),
            ("mirror.example:5000", svc.var("CREDHOST_TEST_REGISTRY_USER").as_str())
        );
        assert!(live.provider().name() == first.name());

        ws.write_config(&base);
        assert!(!live.reload().await.unwrap());
        let err = ask("mirror.example:5000").await.unwrap_err();
        assert_eq!(err.kind(), credhost::ErrorKind::NotFound, "no longer mapped: {err}");
    });
}
