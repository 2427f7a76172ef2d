//! The zero-setup default: filesystem storage.

use credhost_e2e::*;

#[test]
fn download_defaults_to_name_and_never_overwrites_without_force() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    let src = ws.path("1234.zip");
    write_zip(&src, 4096, 9);
    ws.run(&["upload", "1234.zip", "--name", "dir/1234.zip"]).ok();
    std::fs::remove_file(&src).unwrap();

    let out = ws.run(&["download", "projects", "dir/1234.zip"]).ok();
    assert_eq!(out.trim(), "./1234.zip");
    let first = sha256(&src);

    // An existing directory as -o receives the object under its own name.
    std::fs::create_dir(ws.path("into")).unwrap();
    ws.run(&["download", "projects", "dir/1234.zip", "-o", "into"]).ok();
    assert_eq!(sha256(&ws.path("into/1234.zip")), first);

    std::fs::write(&src, b"keep me").unwrap();
    let err = ws.run(&["download", "projects", "dir/1234.zip"]).fails_with(7);
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&src).unwrap(), b"keep me");

    ws.run(&["download", "projects", "dir/1234.zip", "--force"]).ok();
    assert_eq!(sha256(&src), first);
    let leftovers: Vec<_> = std::fs::read_dir(ws.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[test]
fn upload_prints_json_with_checksum_and_credentials_describe_the_store() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 1000, 4);
    let out = ws.run(&["upload", "a.zip", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["bucket"], "projects");
    assert_eq!(v["name"], "a.zip");
    assert_eq!(v["size"], std::fs::metadata(ws.path("a.zip")).unwrap().len());
    assert!(v["checksum"].as_str().unwrap().starts_with("crc32c:"));

    let out = ws.run(&["credentials", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["PROJECTS_BUCKET"], "projects");
    assert_eq!(v["REGISTRY"], "127.0.0.1:1");
    assert!(v.get("REGISTRY_TOKEN").is_none(), "open registry needs no token: {v}");
}

#[test]
fn check_reports_storage_and_registry() {
    let svc = Services::get();
    let ws = Workspace::local_fs(&svc.var("CREDHOST_TEST_REGISTRY_OPEN"));
    let out = ws.run(&["check"]).ok();
    assert!(out.contains("ok   storage") && out.contains("ok   registry"), "{out}");

    let ws = Workspace::local_fs("127.0.0.1:1");
    let run = ws.run(&["check"]);
    run.fails_with(6);
    assert!(run.stdout().contains("FAIL registry"), "{}", run.stdout());
}

#[test]
fn plugin_logs_reach_the_host_log_with_the_plugin_name() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 1000, 4);
    let run = ws.run(&["-v", "upload", "a.zip"]);
    run.ok();
    let err = run.stderr();
    assert!(err.contains("plugin=\"local\"") && err.contains("stored projects/a.zip"), "{err}");
    let quiet = ws.run(&["upload", "a.zip", "--name", "b.zip"]);
    quiet.ok();
    assert_eq!(quiet.stderr(), "", "default output has no logs");
}
