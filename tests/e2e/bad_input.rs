//! Bad input: each gets a clear one-line error with a usage exit code, and
//! nothing is sent or stored. The hand-written tests here, and the corpus of
//! `tests/bad-input/cases.toml` (see [`corpus`]).

use credhost_e2e::*;

mod corpus;

/// Every case of `tests/bad-input/cases.toml`; all failures are reported at once.
#[test]
fn corpus() {
    corpus::run_all();
}

fn stored(ws: &Workspace) -> Vec<String> {
    let dir = ws.path("store/projects");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[track_caller]
fn one_line(err: &str) {
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn not_a_zip_is_refused_before_sending_unless_no_verify() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    std::fs::write(ws.path("notes.zip"), b"these are not the bytes of a zip archive").unwrap();
    let err = ws.run(&["upload", "notes.zip"]).fails_with(2);
    one_line(&err);
    assert!(err.contains("notes.zip is not a ZIP archive") && err.contains("--no-verify"), "{err}");
    assert!(stored(&ws).is_empty());

    // A truncated archive (valid start, no end record) is refused too.
    write_zip(&ws.path("full.zip"), 100_000, 3);
    let bytes = std::fs::read(ws.path("full.zip")).unwrap();
    std::fs::write(ws.path("cut.zip"), &bytes[..50_000]).unwrap();
    let err = ws.run(&["upload", "cut.zip"]).fails_with(2);
    assert!(err.contains("truncated"), "{err}");

    ws.run(&["upload", "notes.zip", "--no-verify"]).ok();
    assert_eq!(stored(&ws), ["notes.zip"]);
}

#[test]
fn empty_and_missing_files_are_refused() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    std::fs::write(ws.path("empty.zip"), b"").unwrap();
    let err = ws.run(&["upload", "empty.zip"]).fails_with(2);
    one_line(&err);
    assert!(err.contains("empty.zip is empty"), "{err}");
    let err = ws.run(&["upload", "empty.zip", "--no-verify"]).fails_with(2);
    assert!(err.contains("is empty"), "{err}");
    let err = ws.run(&["upload", "absent.zip"]).fails_with(3);
    one_line(&err);
    assert!(err.contains("absent.zip"), "{err}");
    let err = ws.run(&["upload", "."]).fails_with(2);
    one_line(&err);
    assert!(stored(&ws).is_empty());
}

#[test]
fn bad_project_names_are_refused() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    write_zip(&ws.path("a.zip"), 1000, 1);
    let long = "x".repeat(1025);
    for name in
        ["../escape.zip", "a/../../b.zip", "/etc/passwd", "line\nbreak.zip", "tab\there.zip", "", "..", long.as_str()]
    {
        let err = ws.run(&["upload", "a.zip", "--name", name]).fails_with(2);
        one_line(&err);
        assert!(err.contains("invalid project name"), "{name:?}: {err}");
        let err = ws.run(&["download", "projects", name, "-o", "out.zip"]).fails_with(2);
        one_line(&err);
    }
    let err = ws.run(&["download", "../etc", "a.zip", "-o", "out.zip"]).fails_with(2);
    assert!(err.contains("invalid bucket name"), "{err}");
    assert!(stored(&ws).is_empty());
    assert!(!ws.path("out.zip").exists());
    assert!(!ws.path("escape.zip").exists() && !ws.path("store/escape.zip").exists());
    assert!(credhost::names::validate_name("nul\0byte.zip").is_err()); // argv cannot carry NUL
    ws.run(&["upload", "a.zip", "--name", &"y".repeat(200)]).ok();
}

#[test]
fn config_errors_name_file_line_and_key() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    let good = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();

    ws.write_config(&good.replace("platform = \"local\"", "platform = \"nope\""));
    let err = ws.run(&["check"]).fails_with(2);
    one_line(&err);
    assert!(err.contains("plugins.toml:1: unknown platform `nope`; known platforms: local"), "{err}");

    ws.write_config(&good.replace("plugin_dir", "plugins_dir"));
    let err = ws.run(&["check"]).fails_with(2);
    one_line(&err);
    assert!(err.contains("plugins.toml:2: unknown field `plugins_dir`"), "{err}");

    ws.write_config(&good.replace("bucket = \"projects\"", "bucket = \"projects\", colour = \"blue\""));
    let err = ws.run(&["check"]).fails_with(2);
    one_line(&err);
    assert!(err.contains("plugins.toml:6: plugins.local.settings.storage.colour: unknown field `colour`"), "{err}");

    ws.write_config(&good.replace("kind = \"fs\"", "kind = \"ftp\""));
    let err = ws.run(&["check"]).fails_with(2);
    assert!(err.contains("plugins.toml:6") && err.contains("ftp"), "{err}");

    ws.write_config(&good.replace(
        "auth = \"none\"",
        "auth = \"basic\", username_env = \"NO_SUCH_USER_VAR\", password_env = \"NO_SUCH_PASS_VAR\"",
    ));
    let err = ws.run(&["token"]).fails_with(2);
    one_line(&err);
    assert!(err.contains("plugins.toml:5") && err.contains("NO_SUCH_USER_VAR") && err.contains("is not set"), "{err}");

    ws.write_config("platform = [\n");
    let err = ws.run(&["check"]).fails_with(2);
    one_line(&err);
    assert!(err.contains("plugins.toml:"), "{err}");

    let err = ws.run(&["--config", "missing.toml", "check"]).fails_with(2);
    assert!(err.contains("missing.toml") && err.contains("cannot read"), "{err}");

    ws.write_config(&good);
    let err = ws.cmd(&["check"]).env("CREDHOST_PLATFORM", "aws").output().unwrap();
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("CREDHOST_PLATFORM: unknown platform `aws`; known platforms: local"), "{err}");
}
