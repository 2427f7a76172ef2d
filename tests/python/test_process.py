"""Process-level behaviour: nothing starts at import or construction, and a
blocking call stays interruptible with Ctrl-C (the transfer is cancelled,
nothing is stored)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import credhost
from conftest import HERE

THREADS = r"""
import json, os, sys
def threads():
    return len(os.listdir("/proc/self/task"))
before = threads()
import credhost, credhost.aio
c = credhost.Credentials(config=sys.argv[1])
l = credhost.LiveCredentials(sys.argv[1])
constructed = threads()
c.get_credentials()
print(json.dumps({"before": before, "constructed": constructed, "used": threads()}))
"""


def test_nothing_starts_at_import_or_construction(make_backend):
    b = make_backend("fs")
    out = subprocess.run(
        [sys.executable, "-c", THREADS, str(b.config)], capture_output=True, text=True, timeout=60, cwd=HERE
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["constructed"] == got["before"], got
    assert got["used"] > got["before"], got


INTERRUPTED = r"""
import sys, time, credhost
class Endless:
    def read(self, n):
        time.sleep(0.01)
        return b"\0" * n
c = credhost.Credentials(config=sys.argv[1])
c.get_registry_token()
print("uploading", flush=True)
try:
    c.upload_project(sys.argv[2], Endless())
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(0)
print("finished?", flush=True)
sys.exit(1)
"""


@pytest.mark.parametrize("kind", ["fs", "local_s3", "gcp"])
def test_ctrl_c_interrupts_a_transfer(kind, make_backend):
    """Ctrl-C once the server shows the upload under way: the call raises
    KeyboardInterrupt soon, and the upload is cleaned up (no object, no
    open multipart upload or resumable session)."""
    b = make_backend(kind)
    name = b.name("interrupted")
    p = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(b.config), name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    try:
        assert p.stdout.readline().strip() == "uploading"
        deadline = time.monotonic() + 60
        while not b.upload_under_way(name):
            assert time.monotonic() < deadline and p.poll() is None, "the upload never got going"
            time.sleep(0.05)
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 and out.strip() == "interrupted", (out, err)
    assert took < 15, took
    assert b.leftovers(name) is None, b.leftovers(name)
