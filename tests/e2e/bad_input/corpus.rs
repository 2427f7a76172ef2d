//! The bad-input corpus: `tests/bad-input/cases.toml` holds one `[[case]]`
//! per input (a configuration, a plugin file, a name, a size, a special
//! file, a flag, credential-helper input), each with its setup, the command
//! run, the exit code and the substring its one-line error must contain.
//! Every case also checks that nothing was stored that should not have
//! been, that nothing was left behind in the working directory (no partial
//! or temporary file) and that the command finished within its deadline.
//!
//! `CREDHOST_CORPUS_ONLY=TEXT` runs the cases whose id contains TEXT;
//! `CREDHOST_CORPUS_SHOW=1` prints what each case printed.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

use credhost_e2e::*;
use serde::Deserialize;

/// How long one command may take.
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    case: Vec<Case>,
}

/// One bad input and what it must produce.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique, `category-what`.
    id: String,
    /// What the input is, when the id does not say it all.
    #[serde(default)]
    about: String,
    /// The workspace: `fs` (the local plugin on a directory store, the
    /// default), `s3` (the local plugin on SeaweedFS, 5 MiB parts) or `none`
    /// (no `plugins.toml`).
    #[serde(default)]
    backend: Backend,
    /// The whole `plugins.toml` instead of the backend's.
    config: Option<String>,
    /// The `[plugins.local.settings]` body instead of the backend's.
    settings: Option<String>,
    /// `[from, to]` replacements in the backend's `plugins.toml`.
    #[serde(default)]
    replace: Vec<[String; 2]>,
    /// Text appended to `plugins.toml`.
    append: Option<String>,
    /// Files to create in the workspace first.
    #[serde(default)]
    files: Vec<FileSpec>,
    /// Environment variables for the command.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Environment variables removed for the command.
    #[serde(default)]
    unset: Vec<String>,
    /// `credhost` (the default) or `helper` (`docker-credential-credhost`,
    /// which reports errors on standard output).
    #[serde(default)]
    program: Program,
    /// The arguments.
    args: Vec<String>,
    /// Standard input (none: empty), as text or as hex bytes.
    stdin: Option<String>,
    stdin_hex: Option<String>,
    /// The expected exit code.
    exit: i32,
    /// The command reports on standard output (`plugins`, `plugins
    /// inspect`): a failure's reason is looked for there, and standard
    /// error stays empty.
    #[serde(default)]
    report: bool,
    /// A failure: substrings of its one error line (one, or a list). A
    /// success: of standard error (a note), if any.
    #[serde(default)]
    error: Strings,
    /// The helper: substrings of its log lines on standard error (which
    /// must otherwise stay empty).
    #[serde(default)]
    log: Strings,
    /// A substring of standard output.
    stdout: Option<String>,
    /// Text that must appear in neither output (a secret given as input).
    #[serde(default)]
    not_printed: Vec<String>,
    /// Objects in the store afterwards (`BUCKET/NAME` for `fs`, `NAME` for `s3`).
    #[serde(default)]
    stored: Vec<String>,
    /// Workspace paths the command may create or replace.
    #[serde(default)]
    creates: Vec<String>,
    /// After a success: download `[BUCKET, NAME]` and compare it with the file `[2]`.
    roundtrip: Option<[String; 3]>,
}

/// One string or a list of them.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Strings {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Strings {
    fn list(&self) -> Vec<&str> {
        match self {
            Strings::None => Vec::new(),
            Strings::One(s) => vec![s.as_str()],
            Strings::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Backend {
    #[default]
    Fs,
    S3,
    None,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Program {
    #[default]
    Credhost,
    Helper,
}

/// A file a case creates before running.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    /// Relative to the workspace; parents are created.
    path: String,
    /// `text`, `hex`, `zip`, `fill`, `sparse`, `fifo`, `socket`, `dir`,
    /// `symlink`, `chardev` (a null device node; needs root) or `copy`.
    kind: String,
    /// `text`: the contents.
    text: Option<String>,
    /// `hex`: the contents.
    hex: Option<String>,
    /// `zip`, `fill`, `sparse`: the size in bytes.
    size: Option<u64>,
    /// `fill`: the byte (default `x`).
    byte: Option<u8>,
    /// `sparse`: a ZIP signature at the start and an end record at the end.
    #[serde(default)]
    zip: bool,
    /// `symlink`: where it points.
    target: Option<String>,
    /// `copy`: the file copied.
    from: Option<String>,
    /// `copy`: keep only this many bytes.
    truncate: Option<u64>,
    /// `copy`: `[offset, hex bytes]` written over the copy.
    #[serde(default)]
    patch: Vec<(u64, String)>,
    /// Permission bits set afterwards.
    mode: Option<u32>,
    /// Owner (user and group id) set afterwards; needs root.
    owner: Option<u32>,
}

/// The corpus file.
pub fn corpus_file() -> PathBuf {
    repo_root().join("tests/bad-input/cases.toml")
}

/// Reads and checks the corpus: unique ids, a known category prefix.
pub fn load() -> Vec<Case> {
    let path = corpus_file();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let corpus: Corpus = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut ids = BTreeSet::new();
    for case in &corpus.case {
        assert!(ids.insert(case.id.clone()), "case id {} is used twice", case.id);
        assert!(
            CATEGORIES.iter().any(|c| case.id.starts_with(&format!("{c}-"))),
            "case {} has no known category prefix ({CATEGORIES:?})",
            case.id
        );
    }
    corpus.case
}

/// Case id prefixes, for the summary.
pub const CATEGORIES: &[&str] = &["config", "plugin", "name", "size", "special", "flag", "helper", "s3"];

/// Runs every case (on a few threads) and fails with the list of every case
/// that did not behave as recorded.
pub fn run_all() {
    let only = std::env::var("CREDHOST_CORPUS_ONLY").ok();
    let cases: Vec<Case> = load().into_iter().filter(|c| only.as_deref().is_none_or(|o| c.id.contains(o))).collect();
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let needs_s3 = cases.iter().any(|c| c.backend == Backend::S3);
    let svc = needs_s3.then(Services::get);
    let run_id = format!(
        "corpus-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
    );
    let started = Instant::now();
    let failures = Mutex::new(Vec::<String>::new());
    let skipped = Mutex::new(Vec::<String>::new());
    let expected_s3 = Mutex::new(BTreeMap::<String, BTreeSet<String>>::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                if !is_root && needs_root(case) {
                    skipped.lock().unwrap().push(case.id.clone());
                    continue;
                }
                let ctx = Ctx { svc: svc.as_ref(), prefix: format!("{run_id}/{}", case.id) };
                match run_case(case, &ctx) {
                    Ok(stored) => {
                        if case.backend == Backend::S3 {
                            expected_s3.lock().unwrap().insert(ctx.prefix.clone(), stored);
                        }
                    }
                    Err(why) if case.about.is_empty() => failures.lock().unwrap().push(format!("{}: {why}", case.id)),
                    Err(why) => failures.lock().unwrap().push(format!("{} ({}): {why}", case.id, case.about)),
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    if let Some(svc) = &svc {
        failures.extend(check_s3(svc, &run_id, &expected_s3.into_inner().unwrap()));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for case in &cases {
        let category = CATEGORIES.iter().find(|c| case.id.starts_with(&format!("{c}-"))).copied().unwrap_or("?");
        *counts.entry(category).or_default() += 1;
    }
    let skipped = skipped.into_inner().unwrap();
    println!(
        "bad-input corpus: {} cases ({counts:?}) in {:.1} s; {} failed; {} skipped (they need root: {skipped:?})",
        cases.len(),
        started.elapsed().as_secs_f64(),
        failures.len(),
        skipped.len()
    );
    failures.sort();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // A case that did not run proves nothing: not being root is a failure
    // that says so, never a pass.
    assert!(
        skipped.is_empty(),
        "{} cases need root (device files, files of other owners) and did not run: {skipped:?}; run the corpus as root, as CI does",
        skipped.len()
    );
}

fn needs_root(case: &Case) -> bool {
    case.files.iter().any(|f| f.kind == "chardev" || f.owner.is_some())
}

struct Ctx<'a> {
    svc: Option<&'a Services>,
    /// This case's object name prefix on S3 (`{p}`).
    prefix: String,
}

impl Ctx<'_> {
    /// Expands `{release}`, `{ws}`, `{p}`, `{s3_endpoint}`, `{s3_region}`,
    /// `{s3_bucket}`, `{registry_open}` and `{repeat:TEXT:N}`.
    fn expand(&self, ws: &Workspace, text: &str) -> String {
        let mut out = text
            .replace("{release}", &release_dir().display().to_string())
            .replace("{ws}", &ws.dir.path().display().to_string())
            .replace("{p}", &self.prefix);
        if let Some(svc) = self.svc {
            for (key, var) in [
                ("{s3_endpoint}", "CREDHOST_TEST_S3_ENDPOINT"),
                ("{s3_region}", "CREDHOST_TEST_S3_REGION"),
                ("{s3_bucket}", "CREDHOST_TEST_S3_BUCKET"),
                ("{registry_open}", "CREDHOST_TEST_REGISTRY_OPEN"),
            ] {
                out = out.replace(key, &svc.var(var));
            }
        }
        while let Some(start) = out.find("{repeat:") {
            let Some(len) = out[start..].find('}') else { break };
            let spec = &out[start + 8..start + len];
            let (piece, n) = spec.rsplit_once(':').expect("{repeat:TEXT:N}");
            let n: usize = n.parse().expect("{repeat:TEXT:N}: N is a number");
            out = format!("{}{}{}", &out[..start], piece.repeat(n), &out[start + len + 1..]);
        }
        out
    }
}

/// Runs one case; returns the S3 objects it expects under its prefix.
fn run_case(case: &Case, ctx: &Ctx) -> Result<BTreeSet<String>, String> {
    let mut ws = match case.backend {
        Backend::Fs => Workspace::local_fs("127.0.0.1:1"),
        Backend::S3 => {
            let svc = ctx.svc.expect("services");
            let mut ws = Workspace::local_s3(svc, "{ url = \"http://127.0.0.1:1\" }");
            let text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap();
            ws.write_config(&text.replace("part_size_mib = 8", "part_size_mib = 5"));
            ws.set_env("AWS_EC2_METADATA_DISABLED", "true");
            ws
        }
        Backend::None => Workspace::new(),
    };
    if let Some(settings) = &case.settings {
        let mut text = std::fs::read_to_string(ws.path("plugins.toml")).unwrap_or_default();
        let at = text.find("[plugins.local.settings]\n").ok_or("settings: the backend has no settings table")?;
        text.truncate(at);
        text.push_str(&format!("[plugins.local.settings]\n{}\n", ctx.expand(&ws, settings)));
        ws.write_config(&text);
    }
    if let Some(config) = &case.config {
        ws.write_config(&ctx.expand(&ws, config));
    }
    if !case.replace.is_empty() || case.append.is_some() {
        let mut text = std::fs::read_to_string(ws.path("plugins.toml")).map_err(|e| format!("plugins.toml: {e}"))?;
        for [from, to] in &case.replace {
            let from = ctx.expand(&ws, from);
            if !text.contains(from.as_str()) {
                return Err(format!("replace: `{from}` is not in plugins.toml"));
            }
            text = text.replace(from.as_str(), &ctx.expand(&ws, to));
        }
        if let Some(more) = &case.append {
            text.push_str(&ctx.expand(&ws, more));
        }
        ws.write_config(&text);
    }
    for f in &case.files {
        make_file(&ws, ctx, f).map_err(|e| format!("setup of {}: {e}", f.path))?;
    }
    for (k, v) in &case.env {
        let v = ctx.expand(&ws, v);
        ws.set_env(k, &v);
    }
    for k in &case.unset {
        ws.unset_env(k);
    }

    let before = snapshot(ws.dir.path());
    let store_before = store_listing(&ws);
    let args: Vec<String> = case.args.iter().map(|a| ctx.expand(&ws, a)).collect();
    let stdin = match (&case.stdin, &case.stdin_hex) {
        (Some(text), _) => ctx.expand(&ws, text).into_bytes(),
        (None, Some(hex)) => hex::decode(hex).map_err(|e| format!("stdin_hex: {e}"))?,
        (None, None) => Vec::new(),
    };
    let program = match case.program {
        Program::Credhost => artifact("credhost"),
        Program::Helper => artifact("docker-credential-credhost"),
    };
    let (code, stdout, stderr, took) = run_with_deadline(&ws, &program, &args, &stdin)?;
    if std::env::var_os("CREDHOST_CORPUS_SHOW").is_some() {
        println!(
            "--- {} ({took:?}): exit {code}\n  stdout: {:?}\n  stderr: {:?}",
            case.id,
            stdout.chars().take(400).collect::<String>(),
            stderr.chars().take(400).collect::<String>()
        );
    }

    let mut problems = Vec::new();
    if code != case.exit {
        problems.push(format!("exit {code}, expected {}", case.exit));
    }
    let (error_stream, other_stream) = match case.program {
        Program::Credhost => (&stderr, &stdout),
        Program::Helper => (&stdout, &stderr),
    };
    for stream in [&stdout, &stderr] {
        if stream.contains("panicked") || stream.contains("RUST_BACKTRACE") {
            problems.push("a panic was printed".into());
        }
    }
    if case.exit != 0 && case.report {
        if !stderr.trim().is_empty() {
            problems.push("a report command wrote to standard error".into());
        }
        expect_in(&mut problems, "the report", &stdout, &case.error, &ws, ctx, true);
    } else if case.exit != 0 {
        let lines = error_stream.trim_end_matches('\n').lines().count();
        if lines != 1 {
            problems.push(format!("{lines} error lines, expected exactly one"));
        }
        if case.program == Program::Helper {
            if case.log.list().is_empty() && !other_stream.trim().is_empty() {
                problems.push("the helper wrote to standard error".into());
            }
            expect_in(&mut problems, "the log", other_stream, &case.log, &ws, ctx, false);
        }
        expect_in(&mut problems, "the error", error_stream, &case.error, &ws, ctx, true);
    } else {
        expect_in(&mut problems, "standard error", &stderr, &case.error, &ws, ctx, false);
    }
    for secret in &case.not_printed {
        if stdout.contains(secret.as_str()) || stderr.contains(secret.as_str()) {
            problems.push(format!("{secret:?} was printed"));
        }
    }
    if let Some(want) = &case.stdout {
        if !stdout.contains(&ctx.expand(&ws, want)) {
            problems.push(format!("standard output does not contain {want:?}"));
        }
    }

    // Nothing stored but what the case expects.
    let mut expected_s3 = BTreeSet::new();
    match case.backend {
        Backend::S3 => expected_s3 = case.stored.iter().map(|s| ctx.expand(&ws, s)).collect(),
        _ => {
            let mut want = store_before.clone();
            want.extend(case.stored.iter().map(|s| ctx.expand(&ws, s)));
            let got = store_listing(&ws);
            if got != want {
                problems.push(format!("the store holds {got:?}, expected {want:?}"));
            }
        }
    }

    // A successful transfer reads back as what was sent.
    let mut creates: BTreeSet<String> = case.creates.iter().map(|c| ctx.expand(&ws, c)).collect();
    if let Some([bucket, name, source]) = &case.roundtrip {
        if code == 0 {
            let out = ws.path("roundtrip.out");
            let run = ws.run(&["download", bucket, &ctx.expand(&ws, name), "-o", "roundtrip.out"]);
            if run.code() != 0 {
                problems.push(format!("read back: exit {}: {}", run.code(), run.stderr().trim()));
            } else if sha256(&out) != sha256(&ws.path(source)) {
                problems.push("read back: the object differs from what was uploaded".into());
            }
            creates.insert("roundtrip.out".into());
        }
    }

    // Nothing left behind: no partial file, no temporary directory, and
    // every file that was there is as it was.
    let after = snapshot(ws.dir.path());
    for (path, entry) in &after {
        if creates.contains(path) {
            continue;
        }
        match before.get(path) {
            None => problems.push(format!("left behind {path} ({entry})")),
            Some(old) if old != entry => problems.push(format!("changed {path}: {old} -> {entry}")),
            Some(_) => {}
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) && !creates.contains(path) {
            problems.push(format!("removed {path}"));
        }
    }

    if problems.is_empty() {
        Ok(expected_s3)
    } else {
        Err(format!(
            "{}\n      args: {args:?}\n      stdout: {:?}\n      stderr: {:?}",
            problems.join("; "),
            stdout.chars().take(300).collect::<String>(),
            stderr.chars().take(300).collect::<String>()
        ))
    }
}

/// Checks that `text` contains every expected substring (and that a
/// failure names at least one).
fn expect_in(
    problems: &mut Vec<String>,
    what: &str,
    text: &str,
    want: &Strings,
    ws: &Workspace,
    ctx: &Ctx,
    required: bool,
) {
    let want = want.list();
    if required && want.is_empty() {
        problems.push("the case names no expected error".into());
    }
    for piece in want {
        if !text.contains(&ctx.expand(ws, piece)) {
            problems.push(format!("{what} does not contain {piece:?}"));
        }
    }
}

/// Runs `program ARGS` in the workspace with `stdin`; returns the exit
/// code (-1 for a signal), standard output and error, and the time taken.
/// A command still running after [`DEADLINE`] is killed and reported.
fn run_with_deadline(
    ws: &Workspace,
    program: &Path,
    args: &[String],
    stdin: &[u8],
) -> Result<(i32, String, String, Duration), String> {
    let outputs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (out_path, err_path) = (outputs.path().join("stdout"), outputs.path().join("stderr"));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = ws.program(program, &arg_refs);
    cmd.stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_path).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(&err_path).map_err(|e| e.to_string())?);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", program.display()))?;
    let mut pipe = child.stdin.take();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(p) = pipe.as_mut() {
            let _ = p.write_all(&input);
        }
    });
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {DEADLINE:?}: killed (args {args:?})"));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let _ = writer.join();
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Ok((status.code().unwrap_or(-1), read(&out_path), read(&err_path), started.elapsed()))
}

/// Every path under `dir` except the store, with its type and, for regular
/// files, size (symbolic links are not followed).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out, &|rel: &str| rel == "store");
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>, skip: &dyn Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        if skip(&rel) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let kind = meta.file_type();
        let desc = if kind.is_symlink() {
            format!("link to {}", std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default())
        } else if kind.is_dir() {
            "directory".to_owned()
        } else if kind.is_file() {
            format!("file of {} bytes", meta.len())
        } else {
            use std::os::unix::fs::FileTypeExt;
            match () {
                _ if kind.is_fifo() => "FIFO".to_owned(),
                _ if kind.is_socket() => "socket".to_owned(),
                _ if kind.is_char_device() => "character device".to_owned(),
                _ => "special file".to_owned(),
            }
        };
        let is_dir = kind.is_dir();
        out.insert(rel, desc);
        if is_dir {
            walk(root, &path, out, skip);
        }
    }
}

/// What the filesystem store holds: `BUCKET/NAME` of every file under
/// `store/` (directories left out).
fn store_listing(ws: &Workspace) -> BTreeSet<String> {
    let root = ws.path("store");
    let mut all = BTreeMap::new();
    walk(&root, &root, &mut all, &|_| false);
    all.into_iter().filter(|(_, desc)| desc != "directory").map(|(path, _)| path).collect()
}

fn make_file(ws: &Workspace, ctx: &Ctx, f: &FileSpec) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = ws.path(&f.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let need = |what: Option<u64>, name: &str| {
        what.ok_or_else(|| std::io::Error::other(format!("kind {} needs `{name}`", f.kind)))
    };
    match f.kind.as_str() {
        "text" => std::fs::write(&path, ctx.expand(ws, f.text.as_deref().unwrap_or("")))?,
        "hex" => std::fs::write(&path, hex::decode(f.hex.as_deref().unwrap_or("")).map_err(std::io::Error::other)?)?,
        "zip" => write_zip(&path, need(f.size, "size")?, 7),
        "fill" => {
            let size = need(f.size, "size")?;
            std::fs::write(&path, vec![f.byte.unwrap_or(b'x'); usize::try_from(size).map_err(std::io::Error::other)?])?
        }
        "sparse" => {
            let size = need(f.size, "size")?;
            let file = std::fs::File::create(&path)?;
            file.set_len(size)?;
            if f.zip {
                use std::os::unix::fs::FileExt;
                file.write_all_at(b"PK\x03\x04", 0)?;
                file.write_all_at(b"PK\x05\x06", size - 22)?;
            }
        }
        "fifo" => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        "chardev" => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
            // SAFETY: a valid NUL-terminated path; 1,3 is the null device.
            if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        "socket" => drop(std::os::unix::net::UnixListener::bind(&path)?),
        "dir" => std::fs::create_dir_all(&path)?,
        "symlink" => std::os::unix::fs::symlink(
            ctx.expand(ws, f.target.as_deref().ok_or_else(|| std::io::Error::other("symlink needs `target`"))?),
            &path,
        )?,
        "copy" => {
            let from = ctx.expand(ws, f.from.as_deref().ok_or_else(|| std::io::Error::other("copy needs `from`"))?);
            let mut bytes = std::fs::read(&from)?;
            if let Some(n) = f.truncate {
                bytes.truncate(usize::try_from(n).map_err(std::io::Error::other)?);
            }
            for (offset, hex) in &f.patch {
                let patch = hex::decode(hex).map_err(std::io::Error::other)?;
                let at = usize::try_from(*offset).map_err(std::io::Error::other)?;
                bytes[at..at + patch.len()].copy_from_slice(&patch);
            }
            std::fs::write(&path, bytes)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        other => return Err(std::io::Error::other(format!("unknown kind {other}"))),
    }
    if let Some(mode) = f.mode {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some(owner) = f.owner {
        std::os::unix::fs::lchown(&path, Some(owner), Some(owner))?;
    }
    Ok(())
}

/// The S3 side: under this run's prefix, exactly the objects the cases
/// expect and no multipart upload left open; then removes what is there.
fn check_s3(svc: &Services, run_id: &str, expected: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let script = format!(
        "{BOTO3_CLIENT}
import json
prefix = sys.argv[1] + '/'
keys = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix):
    keys += [o['Key'] for o in page.get('Contents', [])]
uploads = [u['Key'] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get('Uploads', [])]
print(json.dumps({{'keys': keys, 'uploads': uploads}}))
for k in keys:
    s3.delete_object(Bucket=bucket, Key=k)
"
    );
    let out = python(svc, &script, &[run_id]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("listing JSON");
    let strings = |key: &str| -> Vec<String> {
        v[key].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    let mut failures = Vec::new();
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in strings("keys") {
        let case_prefix = key.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
        found.entry(case_prefix).or_default().insert(key);
    }
    for (prefix, want) in expected {
        let got = found.remove(prefix).unwrap_or_default();
        if &got != want {
            let id = prefix.rsplit('/').next().unwrap_or(prefix);
            failures.push(format!("{id}: the bucket holds {got:?} under its prefix, expected {want:?}"));
        }
    }
    for (prefix, got) in found {
        failures.push(format!("{prefix}: unexpected objects {got:?}"));
    }
    for key in strings("uploads") {
        failures.push(format!("{key}: a multipart upload was left open"));
    }
    failures
}
