//! Reliability trials: real storage servers killed and restarted under real
//! `credhost` processes, on a private set of services (started here with
//! `tests/services/up.sh`, ports from 18800, so that killing them disturbs
//! no other test).
//!
//! For each S3 backend (the local and aws plugins on SeaweedFS, the aws
//! plugin on moto) and for GCS (the gcp plugin on the emulator):
//!
//! - **killed mid-upload**: SIGKILL to the storage server once a quarter of
//!   the file has been sent; the upload must end with a one-line error (no
//!   hang, no panic); after a restart no object is visible, a rerun stores a
//!   byte-identical object and leaves no multipart upload of its own (the
//!   upload the server kept when it died, which its abort could not reach,
//!   is counted and left to a lifecycle rule, as every S3 client does);
//! - **restarted mid-download**: the server is killed and started again once
//!   a quarter of the object has been written; the destination holds either
//!   nothing or the whole verified object, and no temporary file is left;
//! - **SIGTERM mid-upload** and **mid-download**: exit 143, no object, no
//!   open upload, nothing at the destination;
//! - **service: killed mid-upload** (SeaweedFS, which keeps uploads across a
//!   restart): as the first case, but the upload runs in a long-lived
//!   process using the library (this binary, run again with
//!   `--as-service`); the harness sees the upload the restarted server kept
//!   (the service is paused until it has looked), then that process aborts
//!   it, unasked, and no object is visible.
//!
//! `CREDHOST_RELIABILITY_TRIALS` sets the trials per case (default 2, the CI
//! count; `tests/reliability/run` runs 20); `CREDHOST_RELIABILITY_BACKENDS`
//! (`local-seaweedfs,aws-seaweedfs,aws-moto,gcp`) picks backends. The
//! figures are printed as a table and written to
//! `target/reliability/results.md`; the process fails if any trial failed.

use std::{
    collections::HashMap,
    fmt::Write as _,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use credhost_e2e::{backend::*, *};

/// Trials per case when `CREDHOST_RELIABILITY_TRIALS` is unset.
const DEFAULT_TRIALS: usize = 2;
/// The private services' first port.
const PORT_BASE: u16 = 18800;
/// How long a process may take to end after its server died or a signal.
const END_WITHIN: Duration = Duration::from_secs(300);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, file, name] = args.as_slice() {
        if flag == "--as-service" {
            as_service(file, name);
        }
    }
    let trials = std::env::var("CREDHOST_RELIABILITY_TRIALS")
        .ok()
        .map(|v| v.parse::<usize>().expect("CREDHOST_RELIABILITY_TRIALS must be a number"))
        .unwrap_or(DEFAULT_TRIALS);
    let wanted = std::env::var("CREDHOST_RELIABILITY_BACKENDS").ok();
    let services = PrivateServices::start();
    let mut report = Report::default();
    for (label, kind, server) in [
        ("local-seaweedfs", Kind::LocalS3, "weed"),
        ("aws-seaweedfs", Kind::AwsSeaweed, "weed"),
        ("aws-moto", Kind::AwsMoto, "moto"),
        ("gcp", Kind::Gcp, "gcs"),
    ] {
        if wanted.as_deref().is_some_and(|w| !w.split(',').any(|b| b.trim() == label)) {
            continue;
        }
        let mut run = Trials { b: Backend::on(kind, Services::at(&services.dir)), label, server, services: &services };
        let ws = run.b.ws();
        write_zip(&ws.path("big.zip"), SIZE, 77);
        report.add(label, "killed mid-upload", (0..trials).map(|i| run.killed_mid_upload(&ws, i)).collect());
        report.add(label, "restarted mid-download", (0..trials).map(|i| run.restarted_mid_download(&ws, i)).collect());
        report.add(label, "SIGTERM mid-upload", (0..trials).map(|i| run.sigterm_mid_upload(&ws, i)).collect());
        report.add(label, "SIGTERM mid-download", (0..trials).map(|i| run.sigterm_mid_download(&ws, i)).collect());
        if server == "weed" {
            let results = (0..trials).map(|i| run.service_killed_mid_upload(&ws, i)).collect();
            report.add(label, "service: killed mid-upload", results);
        }
    }
    // Stopped before the result: a failing run exits without running drops.
    drop(services);
    let table = report.table(trials);
    println!("{table}");
    let out = release_dir().parent().unwrap().join("reliability");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("results.md"), &table).unwrap();
    if report.failures.is_empty() {
        println!("reliability: every trial passed");
    } else {
        for f in &report.failures {
            eprintln!("FAILED {f}");
        }
        std::process::exit(1);
    }
}

/// The transfer size: large enough that a quarter is read long before the end.
const SIZE: u64 = 192 * MIB;

/// Bytes an upload has read from its file a quarter of the way through
/// sending it. Every upload here reads its file once, as it sends it (the
/// S3 servers keep a full-object CRC32C, so no pass over the file comes
/// first; sent bytes do not show in `/proc/PID/io`: sockets are written
/// with `send`). Were a first pass over the file added, the trigger would
/// fire inside it, before any part is in flight, and the mid-upload trials
/// would no longer interrupt an upload under way.
const MID_UPLOAD: u64 = SIZE / 4;

/// One trial's result: `Ok(outcome)` (a short word for the table) or the failure.
type Trial = Result<Outcome, String>;

struct Outcome {
    /// What happened, e.g. `failed cleanly` or `completed, verified`.
    what: String,
    /// Seconds from the kill or signal to the process's end.
    seconds: f64,
}

// --------------------------------------------------------------- services

/// `tests/services/up.sh` in a directory of its own; stopped on drop.
struct PrivateServices {
    dir: PathBuf,
    /// Servers this harness restarted: its children, to reap.
    restarted: std::sync::Mutex<HashMap<String, Child>>,
}

impl PrivateServices {
    fn start() -> Self {
        let dir = release_dir().parent().unwrap().join("reliability/services");
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new(repo_root().join("tests/services/up.sh"))
            .arg(&dir)
            .env("CREDHOST_TEST_PORT_BASE", PORT_BASE.to_string())
            .status()
            .expect("run tests/services/up.sh");
        assert!(st.success(), "the private services did not start");
        Self { dir, restarted: Default::default() }
    }

    fn pid(&self, name: &str) -> u32 {
        let pids = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        pids.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((f.next()?, f.next()?.parse().ok()?))
            })
            .find(|(n, _)| *n == name)
            .map(|(_, pid)| pid)
            .unwrap_or_else(|| panic!("{name} is not in {}/pids", self.dir.display()))
    }

    /// SIGKILL to the server and its process group; returns how to start it again.
    fn kill(&self, name: &str) -> Launch {
        let pid = self.pid(name);
        let launch = Launch::of(pid);
        // SAFETY: plain signal sends; the group is the server's own (setsid).
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
            libc::kill(pid as i32, libc::SIGKILL);
        }
        if let Some(mut child) = self.restarted.lock().unwrap().remove(name) {
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_running(pid) {
            assert!(Instant::now() < deadline, "{name} ({pid}) outlived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
        launch
    }

    /// Starts a killed server again, the same way, and records its pid.
    fn restart(&self, name: &str, launch: &Launch) {
        let log =
            std::fs::File::options().append(true).create(true).open(self.dir.join(name).join(format!("{name}.log")));
        let log = log.unwrap();
        let mut cmd = Command::new(&launch.argv[0]);
        cmd.args(&launch.argv[1..])
            .current_dir(&launch.cwd)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: setsid is async-signal-safe; it makes the server a group
        // leader as up.sh does, so that a kill reaches its children.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot restart {name}: {e}"));
        let pids = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        let updated: String = pids
            .lines()
            .map(|l| {
                let mut f = l.splitn(3, '\t');
                let (n, _, marker) = (f.next().unwrap_or(""), f.next(), f.next().unwrap_or(""));
                if n == name {
                    format!("{n}\t{}\t{marker}\n", child.id())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(self.dir.join("pids"), updated).unwrap();
        self.restarted.lock().unwrap().insert(name.to_owned(), child);
    }
}

impl Drop for PrivateServices {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/services/down.sh")).arg(&self.dir).stdout(Stdio::null()).status();
        for (_, mut child) in self.restarted.lock().unwrap().drain() {
            let _ = child.wait();
        }
    }
}

/// A server's command line, directory and environment, read before it is killed.
struct Launch {
    argv: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
}

impl Launch {
    fn of(pid: u32) -> Self {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let split = |bytes: Vec<u8>| -> Vec<String> {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let argv = split(std::fs::read(proc.join("cmdline")).unwrap());
        let env = split(std::fs::read(proc.join("environ")).unwrap())
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Self { argv, cwd: std::fs::read_link(proc.join("cwd")).unwrap(), env }
    }
}

/// Alive and not a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

// ----------------------------------------------------------------- trials

struct Trials<'a> {
    b: Backend,
    label: &'static str,
    server: &'static str,
    services: &'a PrivateServices,
}

impl Trials<'_> {
    /// `rchar` of an upload a quarter of the way through sending the file.
    fn mid_upload(&self) -> u64 {
        MID_UPLOAD
    }

    /// Waits until the store answers again (and, for moto, which forgets
    /// everything, until the bucket is back).
    fn wait_ready(&self, ws: &Workspace) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.b.kind == Kind::AwsMoto {
                let _ = Command::new("python3")
                    .arg("-c")
                    .arg(format!(
                        "{BOTO3_CLIENT}\ntry:\n    s3.create_bucket(Bucket=bucket)\nexcept Exception:\n    pass"
                    ))
                    .envs(self.b.svc.vars())
                    .env("CREDHOST_TEST_S3_ENDPOINT", self.b.svc.var("CREDHOST_TEST_MOTO_ENDPOINT"))
                    .output();
            }
            let run = ws.run(&["check"]);
            if run.code() == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not come back: {}", self.server, run.stdout()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn open_uploads(&self, name: &str) -> usize {
        self.boto3_uploads(name, "print(len(uploads))")
    }

    /// Aborts the multipart uploads of `name` a dead server kept; how many.
    fn abort_uploads(&self, name: &str) -> usize {
        self.boto3_uploads(
            name,
            "for u in uploads:\n    s3.abort_multipart_upload(Bucket=bucket, Key=u['Key'], UploadId=u['UploadId'])\nprint(len(uploads))",
        )
    }

    /// Runs `then` with `uploads`, the open multipart uploads of `name`,
    /// and parses what it prints (`usize::MAX` when it fails).
    fn boto3_uploads(&self, name: &str, then: &str) -> usize {
        if self.b.kind == Kind::Gcp {
            return 0;
        }
        let script = format!(
            "{BOTO3_CLIENT}\nuploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=sys.argv[1]).get('Uploads', [])\n{then}"
        );
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(script).arg(name).envs(self.b.svc.vars());
        if self.b.kind == Kind::AwsMoto {
            cmd.env("CREDHOST_TEST_S3_ENDPOINT", self.b.svc.var("CREDHOST_TEST_MOTO_ENDPOINT"));
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(usize::MAX)
    }

    fn killed_mid_upload(&mut self, ws: &Workspace, i: usize) -> Trial {
        let name = unique("rel-up");
        let mut child = spawn(ws, &["upload", "big.zip", "--name", &name]);
        wait_for_io(&mut child, "rchar", self.mid_upload()).map_err(|e| format!("trial {i}: {e}"))?;
        let launch = self.services.kill(self.server);
        let killed = Instant::now();
        let ended = wait_end(child);
        self.services.restart(self.server, &launch);
        let (code, err) = ended.map_err(|e| format!("trial {i}: {e}"))?;
        let seconds = killed.elapsed().as_secs_f64();
        one_line_failure(code, &err).map_err(|e| format!("trial {i}: upload after the kill: {e}"))?;
        self.wait_ready(ws)?;
        if self.b.object_exists(ws, &name) {
            return Err(format!("trial {i}: an object is visible after a failed upload"));
        }
        // Parts the dead server kept: the upload's abort could not reach it.
        // Like every S3 client, credhost leaves those to the bucket's
        // lifecycle rule (AbortIncompleteMultipartUpload): it cannot tell
        // them from another client's upload of the same key in progress.
        let open_after_restart = self.open_uploads(&name);
        if open_after_restart == usize::MAX {
            return Err(format!("trial {i}: cannot list the multipart uploads"));
        }
        let rerun = ws.run(&["upload", "big.zip", "--name", &name]);
        if rerun.code() != 0 {
            return Err(format!("trial {i}: the rerun failed: {}", rerun.stderr()));
        }
        let left = self.open_uploads(&name);
        if left != open_after_restart {
            return Err(format!(
                "trial {i}: {left} multipart upload(s) open for the key after the rerun, {open_after_restart} before it"
            ));
        }
        let back = ws.run(&["download", "projects", &name, "-o", "back.zip", "--force"]);
        if back.code() != 0 || sha256(&ws.path("back.zip")) != sha256(&ws.path("big.zip")) {
            return Err(format!("trial {i}: the rerun's object is not the file: {}", back.stderr()));
        }
        let _ = ws.run(&["delete", "projects", &name]);
        if self.abort_uploads(&name) != open_after_restart {
            return Err(format!("trial {i}: cannot abort what the dead server kept"));
        }
        let what = match open_after_restart {
            0 => "failed cleanly, no upload open after the restart".to_owned(),
            n => format!("failed cleanly; the restarted server kept {n} upload(s) open, the rerun left none"),
        };
        Ok(Outcome { what, seconds })
    }

    fn service_killed_mid_upload(&mut self, ws: &Workspace, i: usize) -> Trial {
        let name = unique("rel-svc");
        let log = ws.path(&format!("service-{i}.log"));
        let exe = std::env::current_exe().expect("this binary's path");
        let mut child = ws
            .program(&exe, &["--as-service", "big.zip", &name])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("the service's log file"))
            .spawn()
            .expect("start the service");
        let stdout = child.stdout.take().expect("the service's stdout");
        let (tx, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let mut child = KillOnDrop(child);
        wait_for_io(&mut child.0, "rchar", self.mid_upload()).map_err(|e| format!("trial {i}: {e}"))?;
        let launch = self.services.kill(self.server);
        let killed = Instant::now();
        let line = said.recv_timeout(END_WITHIN);
        // The service is paused while the server comes back, so that its
        // background abort cannot run before the harness has seen the
        // upload the restarted server kept: without that, an upload the
        // server never kept would pass for one the service aborted.
        let pid = child.0.id() as i32;
        // SAFETY: plain signal sends to this harness's own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        self.services.restart(self.server, &launch);
        let line = line.map_err(|_| format!("trial {i}: the service's upload did not end within {END_WITHIN:?}"))?;
        let seconds = killed.elapsed().as_secs_f64();
        if !line.starts_with("failed: ") || line.contains("panicked") {
            return Err(format!("trial {i}: the service's upload did not fail cleanly: {}", line.trim_end()));
        }
        self.wait_ready(ws)?;
        let kept = self.open_uploads(&name);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        match kept {
            usize::MAX => return Err(format!("trial {i}: cannot list the multipart uploads")),
            0 => return Err(format!("trial {i}: the restarted server kept no upload: there was nothing to abort")),
            _ => {}
        }
        let back = Instant::now();
        loop {
            match self.open_uploads(&name) {
                0 => break,
                usize::MAX => return Err(format!("trial {i}: cannot list the multipart uploads")),
                n if back.elapsed() > Duration::from_secs(150) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!(
                        "trial {i}: {n} upload(s) still open {} s after the server came back; the service's log:\n{log}",
                        back.elapsed().as_secs()
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        if self.b.object_exists(ws, &name) {
            return Err(format!("trial {i}: an object is visible after a failed upload"));
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        if !log.contains("aborted the multipart upload once the server answered again") {
            return Err(format!("trial {i}: the {kept} upload(s) the server kept went, but the service never said it aborted them; its log:\n{log}"));
        }
        Ok(Outcome {
            what: format!(
                "failed cleanly; the server kept {kept} upload(s), which the service aborted once it was back"
            ),
            seconds,
        })
    }

    fn ensure_object(&self, ws: &Workspace, name: &str) -> Result<(), String> {
        if !self.b.object_exists(ws, name) {
            let up = ws.run(&["upload", "big.zip", "--name", name]);
            if up.code() != 0 {
                return Err(format!("cannot store the download's object: {}", up.stderr()));
            }
        }
        Ok(())
    }

    fn restarted_mid_download(&mut self, ws: &Workspace, i: usize) -> Trial {
        let name = format!("rel-dl-{}", self.label);
        self.ensure_object(ws, &name)?;
        let dest = ws.path("dl.zip");
        let _ = std::fs::remove_file(&dest);
        let mut child = spawn(ws, &["download", "projects", &name, "-o", "dl.zip"]);
        wait_for_io(&mut child, "wchar", SIZE / 4).map_err(|e| format!("trial {i}: {e}"))?;
        let launch = self.services.kill(self.server);
        let killed = Instant::now();
        self.services.restart(self.server, &launch);
        let (code, err) = wait_end(child).map_err(|e| format!("trial {i}: {e}"))?;
        let seconds = killed.elapsed().as_secs_f64();
        let parts = part_files(ws.dir.path());
        if !parts.is_empty() {
            return Err(format!("trial {i}: temporary files left: {parts:?}"));
        }
        let what = if code == 0 {
            if sha256(&dest) != sha256(&ws.path("big.zip")) {
                return Err(format!("trial {i}: the download succeeded with other bytes"));
            }
            "completed, verified".to_owned()
        } else {
            one_line_failure(code, &err).map_err(|e| format!("trial {i}: {e}"))?;
            if dest.exists() {
                return Err(format!("trial {i}: a failed download left a file at the destination"));
            }
            "failed cleanly".to_owned()
        };
        self.wait_ready(ws)?;
        Ok(Outcome { what, seconds })
    }

    fn sigterm_mid_upload(&mut self, ws: &Workspace, i: usize) -> Trial {
        let name = unique("rel-term");
        let mut child = spawn(ws, &["upload", "big.zip", "--name", &name]);
        wait_for_io(&mut child, "rchar", self.mid_upload()).map_err(|e| format!("trial {i}: {e}"))?;
        let seconds = terminate(child).map_err(|e| format!("trial {i}: {e}"))?;
        if let Some(left) = self.b.leftovers(ws, &name) {
            return Err(format!("trial {i}: SIGTERM left {left}"));
        }
        Ok(Outcome { what: "exit 143, nothing left".to_owned(), seconds })
    }

    fn sigterm_mid_download(&mut self, ws: &Workspace, i: usize) -> Trial {
        let name = format!("rel-dl-{}", self.label);
        self.ensure_object(ws, &name)?;
        let dest = ws.path("term.zip");
        let mut child = spawn(ws, &["download", "projects", &name, "-o", "term.zip"]);
        wait_for_io(&mut child, "wchar", SIZE / 4).map_err(|e| format!("trial {i}: {e}"))?;
        let seconds = terminate(child).map_err(|e| format!("trial {i}: {e}"))?;
        let parts = part_files(ws.dir.path());
        if dest.exists() || !parts.is_empty() {
            return Err(format!("trial {i}: SIGTERM left the destination or {parts:?}"));
        }
        Ok(Outcome { what: "exit 143, nothing left".to_owned(), seconds })
    }
}

/// Sends SIGTERM to `child`, which must then end with exit code 143;
/// returns the seconds it took.
fn terminate(child: Child) -> Result<f64, String> {
    let sent = Instant::now();
    // SAFETY: a plain signal send to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (code, _) = wait_end(child)?;
    match code {
        143 => Ok(sent.elapsed().as_secs_f64()),
        code => Err(format!("exit {code} after SIGTERM, not 143")),
    }
}

/// `reliability --as-service FILE NAME`: a long-running service in
/// miniature (this binary, run again in a workspace). It uploads FILE as
/// NAME through the library, prints `stored` or `failed: ERROR` on a line,
/// and then lives on as a service does, its host and plugins loaded, until
/// it is killed (or ten minutes have passed). Its log goes to stderr.
fn as_service(file: &str, name: &str) -> ! {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(tracing::Level::INFO).init();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let outcome = runtime.block_on(async {
        let host = credhost::Host::from_file(std::path::Path::new("plugins.toml"), None)?;
        let opts = credhost::UploadOptions { name: Some(name.to_owned()), ..Default::default() };
        host.active().await?.upload_file(std::path::Path::new(file), &opts).await
    });
    match outcome {
        Ok(_) => println!("stored"),
        Err(e) => println!("failed: {}", credhost::one_line(&e.to_string())),
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::thread::sleep(Duration::from_secs(600));
    std::process::exit(0)
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(ws: &Workspace, args: &[&str]) -> Child {
    ws.cmd(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn credhost")
}

/// Waits until the child's `/proc/PID/io` counter `field` reaches `at`.
fn wait_for_io(child: &mut Child, field: &str, at: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            }
            return Err(format!("the transfer ended ({st}) before it could be interrupted: {}", err.trim_end()));
        }
        let io = std::fs::read_to_string(format!("/proc/{}/io", child.id())).unwrap_or_default();
        let n = io
            .lines()
            .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok()))
            .unwrap_or(0);
        if n >= at {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the transfer never reached {at} bytes ({field} {n})"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The exit code and stderr of `child`, which must end within [`END_WITHIN`].
fn wait_end(mut child: Child) -> Result<(i32, String), String> {
    let deadline = Instant::now() + END_WITHIN;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running {} s after the fault", END_WITHIN.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A failure, reported as one line (not a crash, not success).
fn one_line_failure(code: i32, err: &str) -> Result<(), String> {
    if code == 0 {
        return Err("it succeeded".into());
    }
    if code == 101 || code < 0 || err.contains("panicked") {
        return Err(format!("it crashed (exit {code}): {err}"));
    }
    // Warnings may precede it; the error itself is one `credhost:` line.
    if err.lines().filter(|l| l.starts_with("credhost: ")).count() != 1 {
        return Err(format!("exit {code} without a one-line error: {err}"));
    }
    Ok(())
}

// ----------------------------------------------------------------- report

#[derive(Default)]
struct Report {
    rows: Vec<(String, String, usize, String, f64, f64)>,
    failures: Vec<String>,
}

impl Report {
    fn add(&mut self, backend: &str, case: &str, results: Vec<Trial>) {
        let mut seconds: Vec<f64> = Vec::new();
        let mut outcomes: Vec<String> = Vec::new();
        let mut passed = 0;
        for r in results {
            match r {
                Ok(o) => {
                    passed += 1;
                    seconds.push(o.seconds);
                    outcomes.push(o.what);
                }
                Err(e) => self.failures.push(format!("{backend} / {case}: {e}")),
            }
        }
        seconds.sort_by(f64::total_cmp);
        let median = seconds.get(seconds.len() / 2).copied().unwrap_or(f64::NAN);
        let max = seconds.last().copied().unwrap_or(f64::NAN);
        let mut counts: Vec<(String, usize)> = Vec::new();
        for o in outcomes {
            match counts.iter_mut().find(|(w, _)| *w == o) {
                Some((_, n)) => *n += 1,
                None => counts.push((o, 1)),
            }
        }
        let outcomes = counts.iter().map(|(w, n)| format!("{n}× {w}")).collect::<Vec<_>>().join(", ");
        self.rows.push((backend.into(), case.into(), passed, outcomes, median, max));
    }

    fn table(&self, trials: usize) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "| backend | case | passed | outcomes | s to end (median) | s to end (max) |");
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        for (b, c, passed, outcomes, median, max) in &self.rows {
            let _ = writeln!(t, "| {b} | {c} | {passed}/{trials} | {outcomes} | {median:.2} | {max:.2} |");
        }
        t
    }
}
