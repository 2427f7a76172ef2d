"""A Credentials object created and used in a parent keeps working in
children forked from it: os.fork(), multiprocessing with the fork start
method, and gunicorn sync workers with preload_app. Each case runs under a
deadline, so a hang is a failure, not a stuck run."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import credhost
from conftest import BACKENDS, MIB, gunicorn, http, unique, zip_bytes

DEADLINE = 120


def child_work(creds: credhost.Credentials, name: str, seed: int) -> dict:
    """What a child does with the inherited object; plain values back."""
    data = zip_bytes(300_000 + seed, seed)
    put = creds.upload_project(name, io.BytesIO(data))
    path = creds.download_project(put.bucket, put.name)
    with open(path, "rb") as f:
        same = f.read() == data
    return {
        "pid": os.getpid(),
        "same": same,
        "size": put.size,
        "token": creds.get_registry_token() is not None,
        "bucket": creds.get_credentials()["PROJECTS_BUCKET"],
    }


def wait_all(pids, deadline):
    codes = {}
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    hung = [p for p in pids if p not in codes]
    for pid in hung:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return codes, hung


class SlowSource:
    """A file-like object that takes its time, to keep a transfer running."""

    def __init__(self, total: int) -> None:
        self.left = total

    def read(self, n: int) -> bytes:
        if self.left <= 0:
            return b""
        time.sleep(0.05)
        n = min(n, self.left, 256 * 1024)
        self.left -= n
        return b"\0" * n


@pytest.mark.parametrize("kind", BACKENDS)
def test_os_fork(kind, make_backend):
    b = make_backend(kind)
    creds = b.credentials()
    parent_before = child_work(creds, b.name("parent"), 1)
    assert parent_before["same"]
    # A transfer is running in another thread of the parent when it forks:
    # its threads, locks and connections do not exist in the children.
    slow_name = b.name("slow")
    running = threading.Thread(target=creds.upload_project, args=(slow_name, SlowSource(3 * MIB)))
    running.start()
    time.sleep(0.3)
    names = [b.name(f"child{i}") for i in range(3)]
    pids, reads = [], {}
    for i, name in enumerate(names):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and never return into pytest
            os.close(r)
            try:
                out = child_work(creds, name, 10 + i)
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                out = {"error": repr(e)}
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        os.close(w)
        pids.append(pid)
        reads[pid] = r
    codes, hung = wait_all(pids, time.monotonic() + DEADLINE)
    results = {}
    for pid, r in reads.items():
        with os.fdopen(r, "rb") as f:
            text = f.read()
        results[pid] = json.loads(text) if text else None
    assert not hung, f"children hung: {hung}"
    for pid in pids:
        assert codes[pid] == 0 and results[pid] and "error" not in results[pid], results[pid]
        assert results[pid]["same"] and results[pid]["token"], results[pid]
        assert results[pid]["bucket"] == b.bucket
    running.join(DEADLINE)
    assert not running.is_alive()
    # The parent goes on with its own runtime and provider.
    assert child_work(creds, b.name("parent-after"), 2)["same"]


# multiprocessing pickles the function by name: it is looked up here in the
# forked child, where _CREDS is the parent's object.
_CREDS = None


def _pool_task(args):
    name, seed = args
    return child_work(_CREDS, name, seed)


def _pool_download(bucket, name):
    return _CREDS.download_project(bucket, name)


@pytest.mark.parametrize("kind", BACKENDS)
def test_multiprocessing_fork(kind, make_backend):
    global _CREDS
    b = make_backend(kind)
    _CREDS = b.credentials()
    parent = child_work(_CREDS, b.name("parent"), 3)
    assert parent["same"]
    ctx = multiprocessing.get_context("fork")
    jobs = [(b.name(f"pool{i}"), 20 + i) for i in range(4)]
    with ctx.Pool(2) as pool:
        try:
            results = pool.map_async(_pool_task, jobs).get(timeout=DEADLINE)
        except multiprocessing.TimeoutError:
            pytest.fail("a pool worker hung")
    assert all(r["same"] and r["token"] for r in results), results
    assert {r["pid"] for r in results} - {os.getpid()}, "the work ran in the children"
    with pytest.raises(credhost.NotFound):
        # Exceptions pickle back from a worker with their class and kind.
        with ctx.Pool(1) as pool:
            pool.apply_async(_pool_download, (b.bucket, b.name("missing"))).get(timeout=DEADLINE)


@pytest.mark.parametrize("kind", BACKENDS)
def test_gunicorn_preloaded_sync_workers(kind, make_backend, tmp_path):
    b = make_backend(kind)
    preload = b.name("preload")
    env = {**os.environ, "CREDHOST_CONFIG": str(b.config), "PRELOAD_OBJECT": preload}
    with gunicorn(tmp_path, 2, env) as (_, base, _):
        status, body = http("GET", base + "/", timeout=5)
        info = json.loads(body)
        assert info["pid"] != info["master"], "a worker forked from the master answers"

        uploads = [(b.name(f"gunicorn{i}"), zip_bytes(size, 40 + i)) for i, size in enumerate([1000, 200_000, 3 * MIB, 9 * MIB + 7, 50_000, 2 * MIB])]

        def post(item):
            name, data = item
            return http("POST", f"{base}/{name}", body=data, timeout=DEADLINE)

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(post, uploads))
        served_by = set()
        for (name, data), (status, body) in zip(uploads, answers):
            got = json.loads(body)
            assert status == 200, got
            assert (got["name"], got["size"]) == (name, len(data))
            assert got["pid"] != got["master"]
            served_by.add(got["pid"])
        creds = b.credentials()
        for name, data in uploads + [(preload, b"PK\x03\x04 uploaded by the gunicorn master")]:
            path = creds.download_project(b.bucket, name)
            with open(path, "rb") as f:
                assert f.read() == data, name


def _spawned_task(creds, name):
    return child_work(creds, name, 77)


def test_multiprocessing_spawn_receives_the_object_by_its_arguments(make_backend):
    b = make_backend("local_s3")
    creds = b.credentials()
    creds.get_registry_token()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply_async(_spawned_task, (creds, b.name("spawned"))).get(timeout=DEADLINE)
    assert got["same"] and got["pid"] != os.getpid()
