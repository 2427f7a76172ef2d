//! The zero-setup default: filesystem storage.

use credhost_e2e::*;

#[track_caller]
fn assert_no_temporaries(dir: &std::path::Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

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
    assert_no_temporaries(ws.dir.path());
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
    // The configuration is named relatively (`plugins.toml`, in the current
    // directory), and the plugin still sees an absolute base directory: a
    // build job handed the root gets a path that works wherever it runs.
    assert_eq!(v["CREDHOST_STORAGE_ROOT"], ws.path("store").display().to_string(), "{v}");
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

#[test]
fn links_and_special_files_in_the_store_are_refused() {
    use std::os::unix::fs::symlink;
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 2000, 1);
    ws.run(&["upload", "a.zip"]).ok();
    let bucket = ws.path("store/projects");

    // A link to a file outside the store is not followed.
    symlink("/etc/passwd", bucket.join("passwd")).unwrap();
    let err = ws.run(&["download", "projects", "passwd", "-o", "out1"]).fails_with(2);
    assert!(err.contains("symbolic link") && err.lines().count() == 1, "{err}");
    assert!(!ws.path("out1").exists());

    // A link to a device that never ends is not followed either.
    symlink("/dev/zero", bucket.join("zero")).unwrap();
    let err = ws.run(&["download", "projects", "zero", "-o", "out2"]).fails_with(2);
    assert!(err.contains("symbolic link"), "{err}");

    // A FIFO would hang a reader: refused at once.
    let fifo = bucket.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let err = ws.run(&["download", "projects", "fifo", "-o", "out3"]).fails_with(2);
    assert!(err.contains("not a regular file"), "{err}");

    // A directory link inside the bucket leads nowhere, for reads and writes.
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), bucket.join("escape")).unwrap();
    let err = ws.run(&["upload", "a.zip", "--name", "escape/a.zip"]).fails_with(2);
    assert!(err.contains("symbolic link"), "{err}");
    let err = ws.run(&["download", "projects", "escape/a.zip", "-o", "out4"]).fails_with(2);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside the bucket");

    // Uploading over a link replaces the link, never writes through it.
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    symlink(&victim, bucket.join("over.zip")).unwrap();
    ws.run(&["upload", "a.zip", "--name", "over.zip"]).ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    assert!(std::fs::symlink_metadata(bucket.join("over.zip")).unwrap().is_file());

    // Deleting a link removes the link only.
    ws.run(&["delete", "projects", "passwd"]).ok();
    assert!(std::fs::metadata("/etc/passwd").is_ok());
    assert!(std::fs::symlink_metadata(bucket.join("passwd")).is_err());
}

#[test]
fn a_damaged_object_is_detected_and_no_file_is_left() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 100_000, 2);
    ws.run(&["upload", "a.zip"]).ok();
    let stored = ws.path("store/projects/a.zip");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[50_000] ^= 0x01;
    std::fs::write(&stored, &bytes).unwrap();
    // Rewriting the file in place kept its recorded checksum.
    let err = ws.run(&["download", "projects", "a.zip", "-o", "back.zip"]).fails_with(1);
    assert!(err.contains("damaged") && err.lines().count() == 1, "{err}");
    assert!(!ws.path("back.zip").exists(), "a damaged download leaves no file");
    assert_no_temporaries(ws.dir.path());

    // A truncated object is caught by its size as well.
    std::fs::write(&stored, &bytes[..1000]).unwrap();
    let err = ws.run(&["download", "projects", "a.zip", "-o", "back.zip"]).fails_with(1);
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn the_store_keeps_no_temporary_files_and_creates_nothing_for_a_refused_name() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 1000, 3);
    for name in ["../a.zip", "x/../../a.zip", "x//a.zip", "/a.zip", "x/./a.zip"] {
        let err = ws.run(&["upload", "a.zip", "--name", name]).fails_with(2);
        assert!(err.lines().count() == 1, "{name}: {err}");
    }
    assert!(!ws.path("store/projects/x").exists(), "no directory made for a refused name");
    assert!(!ws.path("store/a.zip").exists() && !ws.path("a.zip.part").exists());
    ws.run(&["upload", "a.zip", "--name", "deep/er/a.zip"]).ok();
    let mut all = Vec::new();
    let mut stack = vec![ws.path("store")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                all.push(e.path().strip_prefix(ws.path("store")).unwrap().display().to_string());
            }
        }
    }
    assert_eq!(all, ["projects/deep/er/a.zip"]);
}

/// The remains of a download killed outright (SIGKILL, power loss) are
/// removed by a later download beside them once they are a day old; recent
/// ones (another download may be running) and look-alikes are kept.
#[test]
fn a_later_download_sweeps_day_old_remains_of_killed_downloads() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 1000, 5);
    ws.run(&["upload", "a.zip"]).ok();
    let day_and_more = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
    let make = |dir: &str, inner: &str, old: bool| {
        let d = ws.path(dir);
        std::fs::create_dir(&d).unwrap();
        let f = d.join(inner);
        std::fs::write(&f, b"partial").unwrap();
        if old {
            std::fs::File::options().write(true).open(&f).unwrap().set_modified(day_and_more).unwrap();
            std::fs::File::open(&d).unwrap().set_modified(day_and_more).unwrap();
        }
        d
    };
    let stale = make(".x.zip.Ab3dE9.part", "x.zip", true);
    let recent = make(".y.zip.Zz9aB1.part", "y.zip", false);
    let lookalike = make(".z.zip.notrandom.part", "z.zip", true);
    let other_content = make(".w.zip.Qq1wE2.part", "unexpected", true);
    ws.run(&["download", "projects", "a.zip", "-o", "b.zip"]).ok();
    assert!(!stale.exists(), "a day-old temporary directory is swept");
    for kept in [recent, lookalike, other_content] {
        assert!(kept.exists(), "{} is kept", kept.display());
    }
}
