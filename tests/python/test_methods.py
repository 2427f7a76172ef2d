"""Every method of Credentials on every backend, against the real services."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest

import credhost
from conftest import MIB, http, sha256_file, zip_bytes


def test_construction_reads_only_the_file(backend):
    c = backend.credentials()
    assert not c._core.is_started(), "nothing is loaded before the first call"
    assert c.config_path == str(backend.config)
    assert c.platform == {"fs": "local", "local_s3": "local", "gcp": "gcp"}.get(backend.kind, "aws")
    assert repr(c) == f"Credentials(platform={c.platform!r}, config={str(backend.config)!r})"


def test_round_trips_from_bytes_paths_and_file_likes(backend, tmp_path):
    c = backend.credentials()
    part = backend.part_size
    for size, seed in [(1000, 1), (part, 2), (3 * part + 5, 3)]:
        data = zip_bytes(size, seed)
        src = tmp_path / f"src-{seed}.zip"
        src.write_bytes(data)
        sources = {
            "bytes": data,
            "bytearray": bytearray(data),
            "memoryview": memoryview(data),
            "path": src,
            "str path": str(src),
            "file": open(src, "rb"),
            "BytesIO": io.BytesIO(data),
        }
        for how, obj in sources.items():
            if size > MIB and how in ("bytearray", "memoryview", "str path"):
                continue  # the same code paths as bytes and Path; keep the run short
            name = backend.name(f"rt-{seed}")
            put = c.upload_project(name, obj)
            assert (put.bucket, put.name, put.size) == (backend.bucket, name, len(data)), how
            assert put.checksum.startswith("crc32c:"), put
            dest = tmp_path / f"back-{seed}.zip"
            got = c.download_project(put.bucket, put.name, dest, force=True)
            assert got == str(dest)
            assert sha256_file(dest) == sha256_file(src), f"{how}, {size} bytes"
        sources["file"].close()


def test_download_destinations(backend, tmp_path, monkeypatch):
    c = backend.credentials()
    data = zip_bytes(5000, 7)
    name = backend.name("team a/nested")
    leaf = name.rsplit("/", 1)[-1]
    c.upload_project(name, data)

    # No destination: a new private temporary directory, under the last segment.
    got = c.download_project(backend.bucket, name)
    assert os.path.basename(got) == leaf
    assert open(got, "rb").read() == data
    assert os.stat(os.path.dirname(got)).st_mode & 0o077 == 0, "the temporary directory is private"
    again = c.download_project(backend.bucket, name)
    assert os.path.dirname(again) != os.path.dirname(got)

    # A directory: DIR/LAST_SEGMENT; "." is the current directory, only when asked.
    monkeypatch.chdir(tmp_path)
    assert c.download_project(backend.bucket, name, ".") == os.path.join(".", leaf)
    assert (tmp_path / leaf).read_bytes() == data
    sub = tmp_path / "sub"
    sub.mkdir()
    assert c.download_project(backend.bucket, name, sub) == str(sub / leaf)

    # Never over an existing file unless forced; nothing partial is left.
    with pytest.raises(credhost.AlreadyExists) as e:
        c.download_project(backend.bucket, name, sub)
    assert e.value.kind == "already_exists"
    (sub / leaf).write_bytes(b"old")
    c.download_project(backend.bucket, name, sub, force=True)
    assert (sub / leaf).read_bytes() == data
    assert sorted(os.listdir(sub)) == [leaf]


def test_not_found_and_invalid_names(backend, tmp_path):
    c = backend.credentials()
    with pytest.raises(credhost.NotFound) as e:
        c.download_project(backend.bucket, backend.name("missing"), tmp_path / "x.zip")
    assert e.value.kind == "not_found" and "\n" not in str(e.value)
    assert not (tmp_path / "x.zip").exists()
    before = set(os.listdir(tmp_path))
    with pytest.raises(credhost.NotFound):
        c.download_project("no-such-bucket-here", backend.name("missing"), tmp_path / "x.zip")
    assert set(os.listdir(tmp_path)) == before
    for bad in ["../escape.zip", "/abs.zip", "a\u202eb.zip", ""]:
        with pytest.raises(credhost.InvalidInput):
            c.upload_project(bad, b"PK\x03\x04")
        with pytest.raises(credhost.InvalidInput):
            c.download_project(backend.bucket, bad)
    with pytest.raises(credhost.InvalidInput, match="not a ZIP archive"):
        notzip = tmp_path / "plain.txt"
        notzip.write_text("hello")
        c.upload_project(backend.name("plain"), notzip)
    assert c.upload_project(backend.name("plain"), notzip, verify=False).size == 5
    with pytest.raises(TypeError):
        c.upload_project(backend.name("x"), 12345)
    with pytest.raises(TypeError, match="binary mode"):
        c.upload_project(backend.name("x"), io.StringIO("text"))


def test_a_failing_source_raises_its_own_exception_and_stores_nothing(backend):
    name = backend.name("broken")

    class Broken:
        """Fails once the server shows the upload under way (two parts and
        a little have been read), so that there is an upload to clean up."""

        def __init__(self):
            self.left = 2 * backend.part_size + MIB
            self.saw_it_open = False

        def read(self, n):
            if self.left <= 0:
                deadline = time.monotonic() + 60
                while not self.saw_it_open and time.monotonic() < deadline:
                    self.saw_it_open = backend.upload_under_way(name)
                    time.sleep(0.05)
                raise ConnectionResetError("client went away")
            n = min(n, self.left)
            self.left -= n
            return b"\0" * n

    c = backend.credentials()
    source = Broken()
    with pytest.raises(ConnectionResetError, match="client went away"):
        c.upload_project(name, source)
    assert source.saw_it_open, "the server never showed the upload under way"
    assert backend.leftovers(name) is None, backend.leftovers(name)


def test_progress_is_reported_on_the_calling_thread(backend, tmp_path):
    c = backend.credentials()
    size = backend.part_size + 5
    data = zip_bytes(size, 11)
    src = tmp_path / "progress.zip"
    src.write_bytes(data)
    caller = threading.get_ident()

    def check(calls, how):
        assert calls, f"{how}: never called"
        assert calls[-1] == (size, size), f"{how}: last calls {calls[-3:]}"
        dones = [done for done, _ in calls]
        assert dones == sorted(dones) and len(set(calls)) == len(calls), f"{how}: {calls}"
        assert all(total in (None, size) for _, total in calls), f"{how}: {calls}"

    for how, obj in [("path", src), ("bytes", data), ("file", io.BytesIO(data))]:
        calls = []

        def progress(done, total):
            assert threading.get_ident() == caller
            calls.append((done, total))

        name = backend.name(f"progress-{how}")
        c.upload_project(name, obj, progress=progress)
        check(calls, f"upload from {how}")
        calls = []
        c.download_project(backend.bucket, name, tmp_path / f"back-{how}.zip", progress=progress)
        check(calls, f"download of {how}")
        assert (tmp_path / f"back-{how}.zip").read_bytes() == data

    with pytest.raises(TypeError, match="progress must be a callable"):
        c.upload_project(backend.name("x"), data, progress=5)
    with pytest.raises(TypeError, match="progress must be a callable"):
        c.download_project(backend.bucket, backend.name("x"), progress="no")


def test_a_raising_progress_callable_stops_the_transfer(backend, tmp_path):
    class Enough(Exception):
        pass

    class Slow(io.RawIOBase):
        """Yields the data a little at a time, so the upload is still running
        when the progress callable gets to see some bytes."""

        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def read(self, n=-1):
            time.sleep(0.01)
            step = 256 << 10 if n is None or n < 0 else min(n, 256 << 10)
            chunk = self.data[self.pos : self.pos + step]
            self.pos += len(chunk)
            return chunk

    name = backend.name("progress-stopped")
    seen_open = []

    def stop_once_moving(done, total):
        if done > 0:
            # The server holds part of the upload now: stopping must clean it up.
            seen_open.append(backend.upload_under_way(name))
            raise Enough(f"stopped at {done}")

    c = backend.credentials()
    # Three parts and a little: GCS counts a chunk as done once the next one
    # is read, so its first report comes two thirds of the way in, and the
    # last part is still being read when the callable raises (with two, the
    # last request could already be on its way: a stop that late is too
    # late, and the whole object is stored).
    data = zip_bytes(3 * backend.part_size + 5, 12)
    with pytest.raises(Enough, match="stopped at"):
        c.upload_project(name, Slow(data), progress=stop_once_moving)
    assert seen_open == [True], "the server did not show the upload under way when the callable raised"
    assert backend.leftovers(name) is None, backend.leftovers(name)

    # A download stopped at its first report leaves no file.
    c.upload_project(name, data)

    def stop_at_once(done, total):
        raise Enough("not now")

    dest = tmp_path / "dl"
    dest.mkdir()
    with pytest.raises(Enough, match="not now"):
        c.download_project(backend.bucket, name, dest / "never.zip", progress=stop_at_once)
    assert os.listdir(dest) == []


def test_registry_token_and_auth(backend, services):
    c = backend.credentials()
    token = c.get_registry_token()
    assert isinstance(token, credhost.Secret)
    user, _, password = base64.b64decode(token).decode().partition(":")
    auth = c.registry_auth()
    assert auth.registry_token == token
    assert (auth.username, auth.password) == (user, password)
    if backend.kind.startswith("aws"):
        assert (user, password) == ("AWS", services["CREDHOST_TEST_AWS_REGISTRY_PASSWORD"])
        assert auth.server == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    elif backend.kind == "gcp":
        assert user == "oauth2accesstoken"
        assert auth.expires_at is not None
    else:
        assert (user, password) == (services["CREDHOST_TEST_REGISTRY_USER"], services["CREDHOST_TEST_REGISTRY_PASSWORD"])
        assert auth.server == services["CREDHOST_TEST_REGISTRY_BASIC"]
    backend.secret_values += [password, str(token)]


def test_no_token_when_the_registry_needs_none(services, tmp_path):
    (tmp_path / "plugins.toml").write_text(
        'platform = "local"\n'
        f'plugin_dir = "{__import__("conftest").release_dir()}"\n'
        "[plugins.local.settings]\n"
        f'registry = {{ url = "http://{services["CREDHOST_TEST_REGISTRY_OPEN"]}", auth = "none" }}\n'
        'storage = { kind = "fs", root = "store", bucket = "projects" }\n'
    )
    c = credhost.Credentials(config=tmp_path / "plugins.toml")
    assert c.get_registry_token() is None
    assert c.registry_auth() is None
    assert "REGISTRY_TOKEN" not in c.get_credentials()


def test_build_job_credentials(backend, services):
    c = backend.credentials()
    env = c.get_credentials()
    assert env["PROJECTS_BUCKET"] == backend.bucket
    assert isinstance(env["REGISTRY_TOKEN"], credhost.Secret)
    assert env["REGISTRY_TOKEN"] == c.get_registry_token()
    keys = json.loads((Path(__file__).resolve().parents[1] / "job-env-keys.json").read_text())
    expected = set(keys[backend.kind]) if backend.kind in keys else None
    if expected is None:  # aws
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "PROJECTS_BUCKET"} <= set(env)
        assert isinstance(env["AWS_SECRET_ACCESS_KEY"], credhost.Secret)
        assert env["AWS_SECRET_ACCESS_KEY"] == services["CREDHOST_TEST_S3_SECRET_KEY"]
    else:
        assert set(env) == expected
    for k, v in env.items():
        assert type(v) in (str, credhost.Secret), k
    if backend.kind == "local_s3":
        assert isinstance(env["AWS_SECRET_ACCESS_KEY"], credhost.Secret)
        assert not isinstance(env["AWS_ACCESS_KEY_ID"], credhost.Secret)


def test_check(backend):
    c = backend.credentials()
    report = c.check()
    assert report.ok, report
    assert {i.component for i in report.items} >= {"storage"}


def test_check_failure_raises_with_the_report(services, tmp_path, monkeypatch):
    from conftest import Backend

    b = Backend("local_s3", services, tmp_path)
    monkeypatch.setenv("TEST_S3_SECRET", "definitely-wrong-secret")
    c = b.credentials()
    with pytest.raises(credhost.CheckFailed) as e:
        c.check()
    assert e.value.kind == "check_failed"
    assert not e.value.report.ok
    assert "storage" in str(e.value)
    assert "definitely-wrong-secret" not in str(e.value) + repr(e.value) + repr(e.value.report)
    report = c.check(raise_on_failure=False)
    assert [i.component for i in report.failures()] == ["storage"]
    with pytest.raises(credhost.AuthError) as e:
        c.upload_project(b.name("wrong"), b"PK\x03\x04data")
    assert e.value.kind == "unauthenticated"
    assert "definitely-wrong-secret" not in str(e.value) + repr(e.value)


def test_plugins(backend):
    c = backend.credentials()
    rows = c.plugins()
    active = [r for r in rows if r.name == c.platform]
    assert len(active) == 1 and active[0].status == "loaded", rows
    assert active[0].isolation == "in-process", rows
    assert "upload" in active[0].capabilities
    assert len(active[0].sha256) == 64
    others = [r for r in rows if r.name != c.platform]
    assert others and all(r.status == "not configured (not loaded)" for r in others), rows


def test_presign_and_delete(backend, tmp_path):
    c = backend.credentials()
    data = zip_bytes(3 * MIB + 11, 51)
    name = backend.name("presigned")
    c.upload_project(name, data)
    if not backend.has_urls:
        with pytest.raises(credhost.Unsupported):
            c.presign("GET", backend.bucket, name)
    else:
        got = c.presign("GET", backend.bucket, name, expires=600)
        assert got.method == "GET" and isinstance(got.url, credhost.Secret)
        assert abs(got.expires_at - (__import__("time").time() + 600)) < 30
        status, body = http("GET", got.url, headers=got.headers)
        assert status == 200 and body == data
        put_name = backend.name("presigned-put")
        put = c.presign("PUT", None, put_name, expires=__import__("datetime").timedelta(minutes=5))
        status, _ = http("PUT", put.url, body=data, headers=put.headers)
        assert status == 200
        back = c.download_project(backend.bucket, put_name, tmp_path)
        assert open(back, "rb").read() == data
        env = c.get_credentials(project=(backend.bucket, name), expires=300)
        assert isinstance(env["PROJECT_URL"], credhost.Secret)
        assert http("GET", env["PROJECT_URL"])[1] == data
        with pytest.raises(credhost.InvalidInput, match="7 days"):
            c.presign("GET", backend.bucket, name, expires=8 * 86400)
        with pytest.raises(credhost.InvalidInput):
            c.presign("POST", backend.bucket, name)
    c.delete_project(backend.bucket, name)
    with pytest.raises(credhost.NotFound):
        c.download_project(backend.bucket, name, tmp_path / "gone.zip")
    c.delete_project(backend.bucket, name)
    with pytest.raises(credhost.InvalidInput):
        c.delete_project(backend.bucket, "../escape.zip")


def test_one_object_serves_many_threads(backend):
    c = backend.credentials()
    results, errors = {}, []

    def work(i):
        try:
            data = zip_bytes(200_000 + i, 100 + i)
            name = backend.name(f"thread{i}")
            put = c.upload_project(name, io.BytesIO(data))
            path = c.download_project(put.bucket, put.name)
            results[i] = (open(path, "rb").read() == data, c.get_registry_token() is not None)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results == {i: (True, True) for i in range(8)}


def test_config_errors_are_raised_at_construction(tmp_path, services):
    bad = tmp_path / "plugins.toml"
    plugin_dir = __import__("conftest").release_dir()
    bad.write_text(
        f'platform = "local"\nplugin_dir = "{plugin_dir}"\n'
        '[plugins.local.settings]\nstorage = { kind = "fs", colour = "red" }\n'
    )
    c = credhost.Credentials(config=bad)  # settings are the plugin's: checked when it loads
    with pytest.raises(credhost.ConfigError) as e:
        c.get_credentials()
    assert "plugins.toml" in str(e.value) and e.value.kind == "config"
    bad.write_text("platform = [\n")
    with pytest.raises(credhost.ConfigError, match="plugins.toml"):
        credhost.Credentials(config=bad)
    with pytest.raises(credhost.ConfigError):
        credhost.Credentials("nope", config=bad.with_name("missing.toml"))
    bad.write_text('platform = "local"\n[plugins.local]\n')
    with pytest.raises(credhost.ConfigError, match="unknown platform `gpc`"):
        credhost.Credentials("gpc", config=bad)


def test_a_refused_plugin_file(tmp_path, services):
    (tmp_path / "plugins.toml").write_text(
        f'platform = "local"\nplugin_dir = "{__import__("conftest").release_dir()}"\n'
        '[plugins.local]\nsha256 = "' + "0" * 64 + '"\n[plugins.local.settings]\n'
        'storage = { kind = "fs", root = "store", bucket = "projects" }\n'
    )
    c = credhost.Credentials(config=tmp_path / "plugins.toml")
    with pytest.raises(credhost.PluginRefused) as e:
        c.get_credentials()
    assert e.value.kind == "plugin_refused" and "sha256" in str(e.value)
    assert c.plugins()[0].status.startswith("refused: ")
