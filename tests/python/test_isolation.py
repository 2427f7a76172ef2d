"""A plugin in a process of its own (``isolation = "process"``) under a
Python service: gunicorn (``preload_app``, 4 sync workers) keeps serving
while the plugin's process is crashed (SIGSEGV) 100 times under load.

The plugin is the ``crash`` test fixture: it stores uploads as files, and
an upload whose name starts with ``crash-`` ends its process once the
bytes are read. The count is ``CREDHOST_TEST_CRASHES`` (default 100)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import credhost
from conftest import gunicorn, http, release_dir

CRASHES = int(os.environ.get("CREDHOST_TEST_CRASHES", "100"))
CLIENTS = 4
DEADLINE = 120


def crash_config(tmp_path: Path, how: str = "segv") -> Path:
    """A configuration whose instance runs the crash fixture in a child."""
    fixture = release_dir() / "libfixture_crash.so"
    assert fixture.is_file(), f"{fixture} is missing: run `cargo build --release --workspace` (tests/python/run does)"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    os.chmod(plugins, 0o755)
    shutil.copy(fixture, plugins / "libcredhost_crash.so")
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'platform = "crash"\nplugin_dir = "{plugins}"\n\n[plugins.crash]\nisolation = "process"\n\n'
        f'[plugins.crash.settings]\nhow = "{how}"\nin = "never"\nmarker = "{tmp_path / "marker"}"\n'
    )
    return config


def runner_env() -> dict:
    """The environment without a runner named: the package's own (this
    interpreter) runs the plugin processes."""
    return {k: v for k, v in os.environ.items() if k != "CREDHOST_PLUGIN_RUNNER"}


def workers_of(master: int) -> set:
    """The gunicorn workers of ``master`` (not its own plugin process)."""
    pids = set()
    for task in Path(f"/proc/{master}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    workers = set()
    for pid in pids:
        try:
            if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(pid)
        except OSError:
            pass
    return workers


def test_a_crashing_plugin_process_costs_only_its_requests(tmp_path, monkeypatch):
    """In this process first: a crash is an ``Unavailable`` error and the
    next call is served by a new child, run by this interpreter (the
    package ships no other runner); ``LiveCredentials.status()`` reports
    the process."""
    config = crash_config(tmp_path)
    monkeypatch.delenv("CREDHOST_PLUGIN_RUNNER", raising=False)
    creds = credhost.Credentials(config=config)
    put = creds.upload_project("app.zip", b"PK\x03\x04 whole")
    assert put.size == 10
    try:
        creds.upload_project("crash-1.zip", b"PK\x03\x04 fatal")
        raise AssertionError("the plugin process survived")
    except credhost.Unavailable as e:
        assert "the plugin process for crash died: SIGSEGV" in str(e), e
        assert e.retryable
    assert creds.upload_project("app2.zip", b"PK\x03\x04 again").size == 10
    (row,) = [r for r in creds.plugins() if r.name == "crash"]
    assert (row.status, row.isolation) == ("loaded", "process"), row
    assert row.pid and os.path.exists(f"/proc/{row.pid}"), row
    live = credhost.LiveCredentials(config)
    live.get_credentials()
    state = live.status().process
    assert state is not None and state.pid and state.crashes_in_a_row == 0, state
    with open(f"/proc/{state.pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert os.path.realpath(argv[0]) == os.path.realpath(sys.executable).encode() or argv[0].endswith(b"python3"), argv
    assert b"_plugin_runner_main" in b" ".join(argv), argv


def test_gunicorn_keeps_serving_while_the_plugin_process_crashes(tmp_path):
    config = crash_config(tmp_path)
    env = {**runner_env(), "CREDHOST_CONFIG": str(config), "PRELOAD_OBJECT": "preload.zip"}
    with gunicorn(tmp_path, CLIENTS, env) as (server, base, log_path):
        deadline = time.monotonic() + 30
        while len(workers_of(server.pid)) < CLIENTS:
            assert time.monotonic() < deadline, "the workers did not start: " + log_path.read_text()
            time.sleep(0.1)
        workers = workers_of(server.pid)

        per_client = CRASHES // CLIENTS
        lock = threading.Lock()
        outcomes = {"stored": 0, "crashed": 0}

        def client(c: int) -> None:
            # A normal upload, then one that crashes the plugin's process,
            # over and over: the crashes land between served requests.
            for i in range(per_client):
                body = b"PK\x03\x04" + bytes([c, i % 256]) * 5000
                status, answer = http("POST", f"{base}/ok-{c}-{i}.zip", body=body, timeout=DEADLINE)
                got = json.loads(answer)
                assert status == 200 and got["size"] == len(body), got
                status, answer = http("POST", f"{base}/crash-{c}-{i}.zip", body=b"PK\x03\x04 fatal", timeout=DEADLINE)
                got = json.loads(answer)
                assert status == 500 and got["kind"] == "unavailable", got
                assert "died: SIGSEGV" in got["error"], got
                with lock:
                    outcomes["stored"] += 1
                    outcomes["crashed"] += 1

        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, range(CLIENTS)))
        took = time.monotonic() - started
        assert outcomes == {"stored": per_client * CLIENTS, "crashed": per_client * CLIENTS}, outcomes
        print(f"{outcomes['crashed']} plugin crashes and {outcomes['stored']} uploads served in {took:.1f} s")
        # The same workers serve: none died, none was replaced.
        assert server.poll() is None, log_path.read_text()
        assert workers_of(server.pid) == workers, (workers, workers_of(server.pid), log_path.read_text())
        store = tmp_path / "marker.store"
        assert len(list(store.glob("ok-*.zip"))) == per_client * CLIENTS
        assert not list(store.glob("crash-*")), "a crashed upload was published"
        assert (store / "preload.zip").is_file()


def test_a_plugin_process_outlives_the_thread_that_started_it(tmp_path, monkeypatch):
    """The child started by a call made on a short-lived thread keeps
    serving after that thread ended (its parent-death signal follows the
    thread that started it, which must be one of the runtime's)."""
    monkeypatch.delenv("CREDHOST_PLUGIN_RUNNER", raising=False)
    creds = credhost.Credentials(config=crash_config(tmp_path))
    first = threading.Thread(target=creds.get_credentials)
    first.start()
    first.join()
    (row,) = [r for r in creds.plugins() if r.name == "crash"]
    assert row.pid, row
    time.sleep(0.5)
    assert os.path.exists(f"/proc/{row.pid}") and "SIGKILL" not in open(f"/proc/{row.pid}/status").read()
    creds.get_credentials()
    (again,) = [r for r in creds.plugins() if r.name == "crash"]
    assert again.pid == row.pid, (row, again)
