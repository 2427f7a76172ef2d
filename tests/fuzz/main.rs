//! Fuzzing with proptest (stable Rust): each target generates inputs until
//! its time budget is spent and fails on the first panic, hang or broken
//! property, with the shrunk input that shows it.
//!
//! Budget: `CREDHOST_FUZZ_SECONDS` per target (default 5; the targets run in
//! parallel). `tests/fuzz/run --minutes N` runs every target for N minutes
//! and prints the cases run per target:
//!
//! ```text
//! CREDHOST_FUZZ_SECONDS=600 cargo test --release -p credhost-e2e --test fuzz -- --nocapture --test-threads 8
//! ```
//!
//! Targets: the configuration parser (TOML-like text and arbitrary bytes, in
//! process, and through `credhost token`, which also runs the plugin's
//! settings parser), project and bucket name validation, and the
//! credential helper's input (in process, and through
//! `docker-credential-credhost` with generated standard input).
//! Inputs that once failed are kept below as regression cases.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    io::Write,
    path::Path,
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use credhost::{config::Config, names, registries::RegistryMap, PluginInfo};
use credhost_e2e::{artifact, release_dir, Workspace};
use proptest::{
    prelude::*,
    test_runner::{Config as RunnerConfig, TestCaseError, TestError, TestRunner},
};

/// How long each target runs.
fn budget() -> Duration {
    let secs = std::env::var("CREDHOST_FUZZ_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(5.0);
    Duration::from_secs_f64(secs.max(0.1))
}

/// Runs `check` on values of `strategy` until the budget is spent; panics
/// with the shrunk failing input on the first failure (a panic inside
/// `check` is one). Prints the number of cases run.
fn fuzz<S>(target: &str, batch: u32, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let budget = budget();
    let config = RunnerConfig {
        cases: batch,
        failure_persistence: None,
        max_shrink_iters: 4096,
        max_shrink_time: 60_000,
        ..RunnerConfig::default()
    };
    // A runner counts its cases until `cases`: a fresh one per batch, each
    // with a new random generator drawn from the first.
    let mut seeds = TestRunner::new(config.clone());
    let cases = AtomicU64::new(0);
    let started = Instant::now();
    while started.elapsed() < budget {
        let mut runner = TestRunner::new_with_rng(config.clone(), seeds.new_rng());
        let result = runner.run(&strategy, |value| {
            cases.fetch_add(1, Ordering::Relaxed);
            check(value)
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => {
                panic!("fuzz {target}: {why}\nminimal failing input: {input:?}")
            }
            Err(TestError::Abort(why)) => panic!("fuzz {target}: aborted: {why}"),
        }
    }
    println!(
        "fuzz {target}: {} cases in {:.0} s, no crash",
        cases.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

fn fail(why: String) -> Result<(), TestCaseError> {
    Err(TestCaseError::fail(why))
}

/// An error meant for a person: one non-empty line.
fn one_line(what: &str, message: &str) -> Result<(), TestCaseError> {
    if message.trim().is_empty() || message.contains(['\n', '\r']) {
        return fail(format!("{what}: the error is not one line: {message:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The configuration parser

/// A configuration every target starts from.
const GOOD: &str = r#"platform = "local"
plugin_dir = "target/release"

[plugins.local]
timeout = 30
registries = ["mirror.example:5000"]

[plugins.local.settings]
registry = { url = "http://127.0.0.1:5000", auth = "none" }
storage = { kind = "fs", root = "store", bucket = "projects" }

[plugins.aws]
[plugins.aws.settings]
registry = "123.dkr.ecr.us-east-1.amazonaws.com"
bucket = "projects"

[registries]
"a.example" = "local"
"*.pkg.example" = "aws"

[credential_helper]
cache = false
"#;

const KEYS: &[&str] = &[
    "platform",
    "plugin_dir",
    "plugins",
    "registries",
    "credential_helper",
    "allow_insecure_permissions",
    "plugin",
    "file",
    "sha256",
    "timeout",
    "transfer_idle_timeout",
    "identity_env",
    "settings",
    "registry",
    "storage",
    "url",
    "auth",
    "kind",
    "root",
    "bucket",
    "endpoint",
    "part_size_mib",
    "concurrency",
    "cache",
    "cache_dir",
    "local",
    "aws",
    "\"a.example\"",
    "\"*.pkg.example\"",
    "\"\"",
];

fn key() -> impl Strategy<Value = String> {
    let simple = prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_-]{1,8}",
        1 => any::<String>().prop_map(|s| format!("{:?}", s.chars().take(12).collect::<String>())),
    ];
    proptest::collection::vec(simple, 1..4).prop_map(|parts| parts.join("."))
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| format!("{s:?}")),
        "[ -~]{0,12}".prop_map(|s| format!("\"{s}\"")),
        "[ -~]{0,12}".prop_map(|s| format!("'{s}'")),
        proptest::sample::select(
            &["\"local\"", "\"aws\"", "\"fs\"", "\"s3\"", "\"none\"", "\"http://127.0.0.1:1\""][..]
        )
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9]{15,30}",
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("inf".to_owned()),
        Just("\"\"\"\nmulti\nline\"\"\"".to_owned()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec((key(), inner), 0..4).prop_map(|v| {
                let pairs: Vec<String> = v.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
        ]
    })
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (key(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => key().prop_map(|k| format!("[{k}]")),
        1 => key().prop_map(|k| format!("[[{k}]]")),
        1 => any::<String>().prop_map(|s| format!("# {}", s.replace(['\n', '\r'], " "))),
        1 => Just(String::new()),
        1 => any::<String>(),
    ]
}

/// TOML-like text: generated lines, or the good configuration with a few
/// lines replaced, inserted or cut.
fn config_text() -> impl Strategy<Value = String> {
    let generated = proptest::collection::vec(line(), 0..16).prop_map(|lines| lines.join("\n"));
    let mutated =
        (proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..4, line()), 1..4)).prop_map(|edits| {
            let mut lines: Vec<String> = GOOD.lines().map(str::to_owned).collect();
            for (at, op, text) in edits {
                let i = at.index(lines.len() + 1);
                match op {
                    0 => lines.insert(i, text),
                    1 if i < lines.len() => lines[i] = text,
                    2 if i < lines.len() => {
                        lines.remove(i);
                    }
                    _ if i < lines.len() => {
                        let cut = at.index(lines[i].len() + 1);
                        let cut = (0..=cut).rev().find(|&c| lines[i].is_char_boundary(c)).unwrap_or(0);
                        lines[i].truncate(cut);
                    }
                    _ => lines.push(text),
                }
            }
            lines.join("\n")
        });
    prop_oneof![generated, mutated]
}

/// What a plugin declares for its registry setting, as the host sees it.
fn infos(config: &Config) -> BTreeMap<String, PluginInfo> {
    config
        .instances
        .iter()
        .map(|(name, instance)| {
            let setting = if instance.plugin == "local" { "registry.url" } else { "registry" };
            let info = PluginInfo {
                name: instance.plugin.clone(),
                version: "1".into(),
                api_version: "1.1.0".into(),
                interface: "1.1".into(),
                capabilities: credhost::Operation::ALL.to_vec(),
                description: None,
                panic: None,
                registry_setting: Some(setting.into()),
                identity_env: Vec::new(),
                identity_env_settings: Vec::new(),
                create_only: false,
                multi_part: false,
            };
            (name.clone(), info)
        })
        .collect()
}

/// Parses `text` and, when it parses, builds its registry map and resolves
/// `servers` against it: errors are one line, nothing panics.
fn check_config(text: &str, platform: Option<&str>, servers: &[String]) -> Result<(), TestCaseError> {
    match Config::parse(Path::new("dir/plugins.toml"), text, platform, None) {
        Ok(config) => check_parsed(&config, servers),
        Err(e) => one_line("Config::parse", &e.to_string()),
    }
}

/// A parsed configuration's settings, locations and registry map.
fn check_parsed(config: &Config, servers: &[String]) -> Result<(), TestCaseError> {
    for name in config.instances.keys() {
        let json = config.settings_json(name);
        if serde_json::from_str::<serde_json::Value>(&json).is_err() {
            return fail(format!("settings_json({name}) is not JSON: {json}"));
        }
        let _ = config.locate(&["plugins", name, "settings", "registry", "url"]);
    }
    match RegistryMap::new(config, &infos(config)) {
        Ok(map) => {
            for server in servers {
                let _ = map.resolve(server);
            }
            Ok(())
        }
        Err(e) => one_line("RegistryMap::new", &e.to_string()),
    }
}

#[test]
fn config_parser_text() {
    let servers = proptest::collection::vec(server_text(), 0..3);
    let platform = proptest::option::of(prop_oneof![Just("local".to_owned()), any::<String>()]);
    fuzz("config_parser_text", 256, (config_text(), platform, servers), |(text, platform, servers)| {
        check_config(&text, platform.as_deref(), &servers)
    });
}

#[test]
fn config_parser_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plugins.toml");
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        config_text()
            .prop_flat_map(|text| {
                let len = text.len();
                (Just(text.into_bytes()), proptest::collection::vec((0..=len, any::<u8>()), 0..6))
            })
            .prop_map(|(mut bytes, flips)| {
                for (at, byte) in flips {
                    if at < bytes.len() {
                        bytes[at] = byte;
                    } else {
                        bytes.push(byte);
                    }
                }
                bytes
            }),
    ];
    fuzz("config_parser_bytes", 256, bytes, |bytes| {
        std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match Config::load(&path, None) {
            Ok(config) => check_parsed(&config, &[]),
            Err(e) => one_line("Config::load", &e.to_string()),
        }
    });
}

/// `credhost token` on a mutated configuration: the host's parser, then the
/// local plugin's settings parser. One line on standard error when it
/// fails, a documented exit code, never a panic or a hang.
#[test]
fn config_through_the_cli() {
    let base = format!(
        "platform = \"local\"\nplugin_dir = {:?}\n\n[plugins.local.settings]\nregistry = {{ url = \"http://127.0.0.1:1\", auth = \"none\" }}\nstorage = {{ kind = \"fs\", root = \"store\", bucket = \"projects\" }}\n",
        release_dir().display().to_string()
    );
    let settings_line = prop_oneof![
        (proptest::sample::select(&["registry", "storage", "url", "auth", "bucket", "kind"][..]), value())
            .prop_map(|(k, v)| format!("{k} = {v}")),
        value().prop_map(|v| format!("registry = {{ url = {v} }}")),
        value().prop_map(|v| format!("storage = {{ kind = \"fs\", root = \"store\", bucket = {v} }}")),
        (value(), value()).prop_map(|(e, p)| format!(
            "storage = {{ kind = \"s3\", endpoint = {e}, bucket = \"projects\", access_key_id_env = \"K\", secret_access_key_env = \"S\", part_size_mib = {p} }}"
        )),
        line(),
    ];
    let edits = proptest::collection::vec((0usize..8, settings_line), 1..3);
    let ws = Workspace::new();
    fuzz("config_through_the_cli", 32, edits, |edits| {
        let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
        for (at, text) in edits {
            match at {
                4 | 5 => lines[at] = text,
                _ => lines.push(text),
            }
        }
        ws.write_config(&lines.join("\n"));
        let mut cmd = ws.cmd(&["token"]);
        cmd.env("K", "key").env("S", "secret");
        let (code, stdout, stderr) = run(cmd, &[])?;
        if !matches!(code, 0 | 2 | 3 | 5) {
            return fail(format!("exit {code}\nstdout: {stdout}\nstderr: {stderr}"));
        }
        if stderr.contains("panicked") || stderr.trim_end().lines().count() > usize::from(code != 0) {
            return fail(format!("exit {code}: not one line on standard error: {stderr:?}"));
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Name validation

/// Characters a valid name must never hold: bidi controls, zero-width and
/// other invisible characters, the line and paragraph separators.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' // bidi controls
        | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{180e}' // zero-width
        | '\u{2028}' | '\u{2029}'
        | '\u{00ad}' | '\u{034f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{e0000}'..='\u{e0fff}'
    )
}

fn name_text() -> impl Strategy<Value = String> {
    let special: Vec<char> = vec![
        '/',
        '.',
        '\\',
        '\0',
        '\n',
        '\r',
        '\t',
        '\u{1b}',
        '\u{7f}',
        '\u{85}',
        '\u{9b}',
        '\u{061c}',
        '\u{200b}',
        '\u{200c}',
        '\u{200d}',
        '\u{200e}',
        '\u{200f}',
        '\u{202a}',
        '\u{202e}',
        '\u{2066}',
        '\u{2069}',
        '\u{2060}',
        '\u{feff}',
        '\u{2028}',
        '\u{2029}',
        '\u{180e}',
        '\u{fe0f}',
        '\u{e0041}',
        '\u{ad}',
        '\u{3164}',
        'é',
        ' ',
    ];
    let piece = prop_oneof![
        4 => "[a-z0-9._-]{1,8}",
        2 => proptest::sample::select(special).prop_map(String::from),
        1 => Just("..".to_owned()),
        1 => any::<char>().prop_map(String::from),
        1 => any::<String>(),
    ];
    prop_oneof![
        8 => proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat()),
        1 => (1000usize..1100, "[a-z/]{1,2}").prop_map(|(n, s)| s.repeat(n / s.len())),
        1 => any::<String>(),
    ]
}

#[test]
fn name_validation() {
    fuzz("name_validation", 2048, name_text(), |name| {
        match names::validate_name(&name) {
            Ok(()) => {
                let bad = if name.is_empty() {
                    Some("empty")
                } else if name.len() > names::MAX_NAME_LEN {
                    Some("too long")
                } else if name.chars().any(char::is_control) {
                    Some("a control character")
                } else if name.chars().any(invisible) {
                    Some("a bidi, zero-width or invisible character")
                } else if name.starts_with('/') {
                    Some("absolute")
                } else if name.contains('\\') {
                    Some("a backslash")
                } else if name.split('/').any(|s| s == ".." || s == ".") {
                    Some("a `.` or `..` segment")
                } else if name.split('/').any(str::is_empty) {
                    Some("an empty segment")
                } else {
                    None
                };
                if let Some(why) = bad {
                    return fail(format!("accepted a name with {why}: {name:?}"));
                }
            }
            Err(e) => {
                let message = e.to_string();
                one_line("validate_name", &message)?;
                if !message.starts_with("invalid project name \"") {
                    return fail(format!("unexpected message {message:?}"));
                }
                if message.chars().any(|c| c.is_control() || invisible(c)) {
                    return fail(format!("the message shows the name unescaped: {message:?}"));
                }
            }
        }
        match names::validate_bucket(&name) {
            Ok(()) => {
                let ok = (1..=63).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
                    && !name.starts_with('.')
                    && !name.contains("..");
                if !ok {
                    return fail(format!("accepted the bucket {name:?}"));
                }
            }
            Err(e) => {
                let message = e.to_string();
                one_line("validate_bucket", &message)?;
                if message.chars().any(|c| c.is_control() || invisible(c)) {
                    return fail(format!("the message shows the bucket unescaped: {message:?}"));
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// The credential helper's input

/// What registry clients send to `get`, and things near it.
fn server_text() -> impl Strategy<Value = String> {
    let scheme = proptest::sample::select(&["", "http://", "https://", "HTTPS://", "://", "ftp://", "http:/"][..]);
    let user = proptest::sample::select(&["", "user:hunter2@", "@", "a@b@"][..]);
    let host = prop_oneof![
        proptest::sample::select(
            &[
                "127.0.0.1:1",
                "a.example",
                "A.EXAMPLE.",
                "x.pkg.example",
                "pkg.example",
                "mirror.example:5000",
                "[::1]:5000",
                ""
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    let path = proptest::sample::select(&["", "/", "/v2/", "?x", "#y", "/v2/?a=b#c", "\n", " "][..]);
    let ws = proptest::sample::select(&["", " ", "\n", "\t\r\n"][..]);
    (ws.clone(), scheme, user, host, path, ws).prop_map(|(a, s, u, h, p, b)| format!("{a}{s}{u}{h}{p}{b}"))
}

fn helper_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => server_text().prop_map(String::into_bytes),
        2 => proptest::collection::vec(any::<u8>(), 0..512),
        1 => (65_000usize..66_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

#[test]
fn helper_input_in_process() {
    let config = Config::parse(Path::new("plugins.toml"), GOOD, None, None).expect("GOOD parses");
    let map = RegistryMap::new(&config, &infos(&config)).expect("GOOD's registry map");
    fuzz("helper_input_in_process", 1024, helper_input(), |input| {
        match credhost_cli::credhelper::get_request(&input) {
            Err(why) => one_line("get_request", &why),
            Ok(server) => {
                if server.is_empty() || server != server.trim() {
                    return fail(format!("get_request gave {server:?}"));
                }
                let host = credhost::api::rules::registry_host(server);
                if host.contains(['/', '?', '#', '@']) || host != host.to_ascii_lowercase() || host.ends_with('.') {
                    return fail(format!("registry_host({server:?}) = {host:?}"));
                }
                if let Some(route) = map.resolve(server) {
                    if !config.instances.contains_key(&route.instance) {
                        return fail(format!("{server:?} resolved to unknown instance {}", route.instance));
                    }
                }
                Ok(())
            }
        }
    });
}

/// `docker-credential-credhost ACTION` with generated standard input: exit 0
/// or 1, exactly one line on standard output, never a panic or a hang.
#[test]
fn helper_process() {
    let ws = Workspace::local_fs("127.0.0.1:1");
    let text = std::fs::read_to_string(ws.path("plugins.toml")).expect("plugins.toml");
    ws.write_config(&format!("{text}\n[registries]\n\"a.example\" = \"local\"\n\"*.pkg.example\" = \"local\"\n"));
    let config = ws.path("plugins.toml").display().to_string();
    let helper = artifact("docker-credential-credhost");
    let action = prop_oneof![
        8 => Just("get".to_owned()),
        1 => proptest::sample::select(&["list", "store", "erase", "version"][..]).prop_map(str::to_owned),
        1 => "[a-z-]{0,6}",
    ];
    fuzz("helper_process", 32, (action, helper_input()), |(action, input)| {
        let mut cmd = ws.program(&helper, &[&action]);
        cmd.env("CREDHOST_CONFIG", &config);
        let (code, stdout, stderr) = run(cmd, &input)?;
        if !matches!(code, 0 | 1) {
            return fail(format!("exit {code}\nstdout: {stdout}\nstderr: {stderr}"));
        }
        if stdout.trim_end_matches('\n').lines().count() != 1 && !(action == "list" && code == 0) {
            return fail(format!("exit {code}: not one line on standard output: {stdout:?}"));
        }
        if stdout.contains("hunter2") || stderr.contains("hunter2") || stderr.contains("panicked") {
            return fail(format!("stdout: {stdout:?}\nstderr: {stderr:?}"));
        }
        Ok(())
    });
}

/// Runs `cmd` with `stdin`, killed after 20 s; returns the exit code (-1 for
/// a signal), standard output and standard error.
fn run(mut cmd: std::process::Command, stdin: &[u8]) -> Result<(i32, String, String), TestCaseError> {
    let outputs = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (out_path, err_path) = (outputs.path().join("out"), outputs.path().join("err"));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| TestCaseError::fail(e.to_string()));
    cmd.stdin(Stdio::piped()).stdout(file(&out_path)?).stderr(file(&err_path)?);
    let mut child = cmd.spawn().map_err(|e| TestCaseError::fail(format!("spawn: {e}")))?;
    let mut pipe = child.stdin.take();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(p) = pipe.as_mut() {
            let _ = p.write_all(&input);
        }
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| TestCaseError::fail(e.to_string()))? {
            Some(status) => break status,
            None if started.elapsed() > Duration::from_secs(20) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestCaseError::fail("still running after 20 s"));
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    let _ = writer.join();
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Ok((status.code().unwrap_or(-1), read(&out_path), read(&err_path)))
}

// ---------------------------------------------------------------------------
// Regression cases: inputs the targets above once failed on.

#[test]
fn regressions() {
    // Names made only of invisible characters that look like a plain name.
    for name in ["a\u{180e}.zip", "a\u{fe0f}.zip", "a\u{e0041}.zip", "a\u{3164}.zip", "in\u{ad}voice.zip"] {
        assert!(names::validate_name(name).is_err(), "{name:?}");
    }
    // A quoted key holding an escaped carriage return, echoed by the error.
    for text in ["\n\"W\\r\" = -3.5e-286", "[plugins.\"a\\nb\"]\nx = 1\n"] {
        let err = Config::parse(Path::new("plugins.toml"), text, None, None).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(!err.is_empty() && !err.contains(['\r', '\n']), "{text:?}: {err:?}");
    }
}
