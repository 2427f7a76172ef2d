"""A 300 MiB upload from a file-like object stays in bounded memory: the
process's peak RSS grows by less than 64 MiB during it, and the stored
object is byte-identical.

Measured in a fresh interpreter (so that earlier tests' peaks do not count),
after a small warm-up upload has loaded the plugin and started the runtimes.
The source generates its bytes as they are read, so the data never exists
whole in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import HERE, MIB, sha256_file

SIZE = 300 * MIB
LIMIT = 64 * MIB

SCRIPT = r"""
import hashlib, json, random, resource, sys, time
import credhost

class Generated:
    '''read(n) of `total` pseudo-random bytes, hashed as they go.'''
    def __init__(self, total, seed):
        self.left = total
        self.rng = random.Random(seed)
        self.sha256 = hashlib.sha256()
        self.calls = 0
    def read(self, n=-1):
        self.calls += 1
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        chunk = self.rng.randbytes(n)
        self.sha256.update(chunk)
        self.left -= n
        return chunk

config, warm_name, name, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
creds = credhost.Credentials(config=config)
creds.upload_project(warm_name, Generated(2 << 20, 1))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
source = Generated(size, 2)
started = time.monotonic()
put = creds.upload_project(name, source)
seconds = time.monotonic() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew": (after - before) * 1024, "before": before * 1024, "size": put.size,
                  "sha256": source.sha256.hexdigest(), "largest_read": 1 << 20, "calls": source.calls,
                  "seconds": seconds}))
"""


@pytest.mark.parametrize("kind", ["fs", "local_s3", "aws_seaweed", "aws_moto", "gcp"])
def test_300_mib_from_a_file_like_object_in_bounded_memory(kind, make_backend, tmp_path):
    b = make_backend(kind)
    warm, name = b.name("warm"), b.name("big")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(b.config), warm, name, str(SIZE)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=HERE,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    print(kind, {k: got[k] for k in ("grew", "before", "seconds", "calls")})
    assert got["size"] == SIZE
    assert got["grew"] < LIMIT, f"peak RSS grew by {got['grew'] / MIB:.1f} MiB during the upload"
    # read(n) was asked for 1 MiB at a time: 300 calls and the final empty one.
    assert got["calls"] <= SIZE // MIB + 2, got["calls"]
    path = b.credentials().download_project(b.bucket, name, tmp_path)
    assert os.path.getsize(path) == SIZE
    assert sha256_file(path) == got["sha256"]
    os.remove(path)
