"""Fixtures for the Python package's tests, against the real services that
tests/services/up.sh starts (read from its env file, as tests/support does
for the Rust tests). A missing service, plugin or package is a failure that
says what to run, never a skip.

Each backend mirrors a workspace of the Rust end-to-end tests: the
filesystem store, the local plugin on SeaweedFS, the aws plugin on
SeaweedFS and on moto, and the gcp plugin on the GCS emulator with a fresh
service-account key. Every one has a registry that needs credentials.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MIB = 1 << 20

BACKENDS = ["fs", "local_s3", "aws_seaweed", "aws_moto", "gcp"]

sys.path.insert(0, str(HERE))


def release_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "release"


def read_services() -> Dict[str, str]:
    run_dir = Path(os.environ.get("CREDHOST_TEST_SERVICES_DIR") or REPO / "tests/services/.run")
    env_file = run_dir / "env"
    try:
        text = env_file.read_text()
    except OSError as e:
        pytest.fail(
            f"services are not running ({env_file}: {e}): start them with tests/services/up.sh, or run tests/python/run",
            pytrace=False,
        )
    out = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export ") :].split("=", 1)
            out[k] = v.strip("'\"")
    return out


class Services:
    def __init__(self, env: Dict[str, str]) -> None:
        self.env = env

    def __getitem__(self, name: str) -> str:
        if name not in self.env:
            pytest.fail(f"{name} missing from the services env file", pytrace=False)
        return self.env[name]


# The variables the test configurations name, and the machine's own cloud
# configuration shut out, set once for the whole run (and inherited by the
# subprocesses the tests start): the Rust tests use the same values.
_EMPTY_AWS = Path(os.environ.get("TMPDIR", "/tmp")) / f"credhost-py-empty-aws-{os.getpid()}"


def _prepare_environment(svc: Services) -> None:
    _EMPTY_AWS.write_text("")
    for k in [
        "CREDHOST_PLATFORM",
        "CREDHOST_CONFIG",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GCE_METADATA_HOST",
        "CLOUDSDK_CONFIG",
    ]:
        os.environ.pop(k, None)
    os.environ.update(
        {
            "REG_USER": svc["CREDHOST_TEST_REGISTRY_USER"],
            "REG_PASS": svc["CREDHOST_TEST_REGISTRY_PASSWORD"],
            "TEST_S3_KEY": svc["CREDHOST_TEST_S3_ACCESS_KEY"],
            "TEST_S3_SECRET": svc["CREDHOST_TEST_S3_SECRET_KEY"],
            "AWS_CONFIG_FILE": str(_EMPTY_AWS),
            "AWS_SHARED_CREDENTIALS_FILE": str(_EMPTY_AWS),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ACCESS_KEY_ID": svc["CREDHOST_TEST_S3_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": svc["CREDHOST_TEST_S3_SECRET_KEY"],
        }
    )


@pytest.fixture(scope="session")
def services() -> Services:
    svc = Services(read_services())
    for plugin in ["local", "aws", "gcp"]:
        lib = release_dir() / f"libcredhost_{plugin}.so"
        if not lib.exists():
            pytest.fail(f"{lib} is missing: run `cargo build --release --workspace` (tests/python/run does)", pytrace=False)
    try:
        import credhost  # noqa: F401
    except ImportError as e:
        pytest.fail(f"the credhost package is not installed ({e}): pip install ./bindings/python", pytrace=False)
    _prepare_environment(svc)
    return svc


def http(method: str, url: str, body: Optional[bytes] = None, headers: Optional[dict] = None, timeout: float = 60):
    headers = dict(headers or {})
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        # urllib would send a form content type, which moto parses as a form (and waits for).
        headers["Content-Type"] = "application/octet-stream"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def gcp_tokens_issued(svc: Services) -> int:
    """How many access tokens the GCP token endpoint and metadata server
    have issued so far (remember it, then ask gcp_tokens_issued_since)."""
    status, body = http("GET", f'{svc["CREDHOST_TEST_GCP_AUTH"]}/_test/issued?since=0')
    assert status == 200, (status, body)
    return json.loads(body)["next"]


def gcp_tokens_issued_since(svc: Services, since: int) -> List[str]:
    """Every access token issued since the count was ``since``, by any
    process: a subprocess under test fetches tokens no other process sees."""
    status, body = http("GET", f'{svc["CREDHOST_TEST_GCP_AUTH"]}/_test/issued?since={since}')
    assert status == 200, (status, body)
    return json.loads(body)["tokens"]


def gcp_token_forms(token: str) -> List[str]:
    """An access token as it is, and as the registry credentials made of it
    (docker's base64 of ``oauth2accesstoken:TOKEN``)."""
    return [token, base64.b64encode(f"oauth2accesstoken:{token}".encode()).decode()]


_counter = itertools.count()


def unique(prefix: str) -> str:
    """An object name no other test (or concurrent run) uses."""
    return f"py-{prefix}-{os.getpid()}-{time.time_ns()}-{next(_counter)}.zip"


def zip_bytes(size: int, seed: int) -> bytes:
    """A valid ZIP archive of about ``size`` bytes (one stored entry of random bytes)."""
    payload = random.Random(seed).randbytes(max(size - 120, 1))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("payload.bin", payload)
    return buf.getvalue()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


class Backend:
    """One storage backend, with a workspace holding its plugins.toml."""

    def __init__(self, kind: str, svc: Services, dir: Path) -> None:
        self.kind = kind
        self.svc = svc
        self.dir = dir
        self.bucket = "projects"
        self.secret_values: List[str] = [svc["CREDHOST_TEST_REGISTRY_PASSWORD"]]
        self._made: List[str] = []
        basic = (
            f'{{ url = "http://{svc["CREDHOST_TEST_REGISTRY_BASIC"]}", auth = "basic", '
            'username_env = "REG_USER", password_env = "REG_PASS" }'
        )
        head = f'plugin_dir = "{release_dir()}"\n'
        if kind == "fs":
            text = (
                f'platform = "local"\n{head}\n[plugins.local.settings]\nregistry = {basic}\n'
                'storage = { kind = "fs", root = "store", bucket = "projects" }\n'
            )
        elif kind == "local_s3":
            text = (
                f'platform = "local"\n{head}\n[plugins.local.settings]\nregistry = {basic}\n'
                f'storage = {{ kind = "s3", endpoint = "{svc["CREDHOST_TEST_S3_ENDPOINT"]}", '
                f'region = "{svc["CREDHOST_TEST_S3_REGION"]}", bucket = "{svc["CREDHOST_TEST_S3_BUCKET"]}", '
                'access_key_id_env = "TEST_S3_KEY", secret_access_key_env = "TEST_S3_SECRET", part_size_mib = 8 }\n'
            )
            self.secret_values.append(svc["CREDHOST_TEST_S3_SECRET_KEY"])
        elif kind in ("aws_seaweed", "aws_moto"):
            s3 = svc["CREDHOST_TEST_S3_ENDPOINT"] if kind == "aws_seaweed" else svc["CREDHOST_TEST_MOTO_ENDPOINT"]
            text = (
                f'platform = "aws"\n{head}\n[plugins.aws.settings]\nregion = "us-east-1"\n'
                'registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com"\nbucket = "projects"\n'
                f'ecr_endpoint_url = "{svc["CREDHOST_TEST_MOTO_ENDPOINT"]}"\ns3_endpoint_url = "{s3}"\n'
                "force_path_style = true\npart_size_mib = 8\n"
            )
            self.secret_values.append(svc["CREDHOST_TEST_S3_SECRET_KEY"])
            if kind == "aws_moto":
                self._create_moto_bucket()
        elif kind == "gcp":
            status, body = http("POST", f'{svc["CREDHOST_TEST_GCP_AUTH"]}/_test/service-account?lifetime=3600')
            assert status == 200, (status, body)
            key = json.loads(body)
            (dir / "key.json").write_text(json.dumps(key))
            text = (
                f'platform = "gcp"\n{head}\n[plugins.gcp.settings]\nproject_id = "{svc["CREDHOST_TEST_GCP_PROJECT"]}"\n'
                'location = "us-central1"\nregistry = "us-central1-docker.pkg.dev"\n'
                f'bucket = "{svc["CREDHOST_TEST_GCS_BUCKET"]}"\nstorage_endpoint = "{svc["CREDHOST_TEST_GCS_ENDPOINT"]}"\n'
                'credentials = { service_account_file = "key.json" }\n'
            )
            self.secret_values += [l for l in key["private_key"].splitlines() if not l.startswith("-----")][:4]
        else:
            raise ValueError(kind)
        self.config = dir / "plugins.toml"
        self.config.write_text(text)

    def _create_moto_bucket(self) -> None:
        import boto3
        from botocore.config import Config

        s3 = boto3.client(
            "s3",
            endpoint_url=self.svc["CREDHOST_TEST_MOTO_ENDPOINT"],
            aws_access_key_id="x",
            aws_secret_access_key="y",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        try:
            s3.create_bucket(Bucket="projects")
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass

    @property
    def part_size(self) -> int:
        return 16 * MIB if self.kind == "gcp" else 8 * MIB

    @property
    def has_urls(self) -> bool:
        return self.kind != "fs"

    def credentials(self, platform: Optional[str] = None):
        import credhost

        return credhost.Credentials(platform, self.config)

    def name(self, prefix: str) -> str:
        """A unique object name, deleted after the test."""
        n = unique(prefix)
        self._made.append(n)
        return n

    # ---- what the server shows of an upload -----------------------------

    def _s3(self):
        import boto3
        from botocore.config import Config

        endpoint = self.svc["CREDHOST_TEST_MOTO_ENDPOINT" if self.kind == "aws_moto" else "CREDHOST_TEST_S3_ENDPOINT"]
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=self.svc["CREDHOST_TEST_S3_ACCESS_KEY"],
            aws_secret_access_key=self.svc["CREDHOST_TEST_S3_SECRET_KEY"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def _gcs_stats(self, name: str) -> dict:
        status, body = http("GET", f'{self.svc["CREDHOST_TEST_GCS_ENDPOINT"]}/_proxy/stats?object={urllib.parse.quote(name)}')
        assert status == 200, (status, body)
        return json.loads(body)

    def _part_files(self) -> List[Path]:
        return [p for p in (self.dir / "store").rglob("*.part")] if (self.dir / "store").exists() else []

    def upload_under_way(self, name: str) -> bool:
        """Whether the server shows an upload of ``name`` under way: a
        temporary file holding data (fs), an open multipart upload with parts
        (S3), a resumable session that received bytes (GCS)."""
        if self.kind == "fs":
            return any(p.is_file() and p.stat().st_size > 0 for p in self._part_files())
        if self.kind == "gcp":
            return self._gcs_stats(name)["bytes_up"] > 0
        s3 = self._s3()
        uploads = s3.list_multipart_uploads(Bucket=self.bucket, Prefix=name).get("Uploads", [])
        return any(s3.list_parts(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts") for u in uploads)

    def leftovers(self, name: str) -> Optional[str]:
        """What a failed or stopped upload of ``name`` left on the server,
        if anything: an object, a temporary file, an open multipart upload,
        a resumable session never cancelled."""
        import credhost

        try:
            self.credentials().download_project(self.bucket, name)
            return "an object"
        except credhost.NotFound:
            pass
        if self.kind == "fs":
            parts = self._part_files()
            return f"temporary files {parts}" if parts else None
        if self.kind == "gcp":
            s = self._gcs_stats(name)
            return f"an upload session left open: {s}" if s["initiations"] > s["cancellations"] else None
        open_uploads = self._s3().list_multipart_uploads(Bucket=self.bucket, Prefix=name).get("Uploads", [])
        return f"{len(open_uploads)} open multipart upload(s)" if open_uploads else None

    def forget_all(self) -> None:
        """Frees what the test stored (the GCS emulator holds objects in memory)."""
        if not self._made:
            return
        c = self.credentials()
        for n in self._made:
            try:
                c.delete_project(self.bucket, n)
            except Exception:
                pass


@pytest.fixture(params=BACKENDS)
def backend(request, services, tmp_path) -> Backend:
    b = Backend(request.param, services, tmp_path)
    yield b
    b.forget_all()


@pytest.fixture
def make_backend(services, tmp_path_factory) -> Callable[[str], Backend]:
    made: List[Backend] = []

    def make(kind: str) -> Backend:
        b = Backend(kind, services, tmp_path_factory.mktemp(kind))
        made.append(b)
        return b

    yield make
    for b in made:
        b.forget_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(tmp_path: Path, workers: int, env: Dict[str, str]):
    """``apps.gunicorn_app`` served by gunicorn (sync workers,
    ``preload_app``) with ``env``: yields ``(server, base_url, log_path)``
    once it answers; stopped with SIGTERM after, and it must then exit 0."""
    port = free_port()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        f'bind = "127.0.0.1:{port}"\nworkers = {workers}\nworker_class = "sync"\npreload_app = True\n'
        'timeout = 90\ngraceful_timeout = 10\nloglevel = "warning"\n'
    )
    log_path = tmp_path / "gunicorn.log"
    log = open(log_path, "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "apps.gunicorn_app:app"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(HERE)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log_path.read_text()
            try:
                status, _ = http("GET", base + "/", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start: " + log_path.read_text()
            time.sleep(0.2)
        yield server, base, log_path
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    assert server.returncode == 0, log_path.read_text()
