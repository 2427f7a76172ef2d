"""The drop-in shape of the original service: a Django deploy view receives a
ZIP through Django's test client and stores it with upload_project; the
build-job helper renders get_registry_token() and get_credentials() into the
job's environment; the job, a separate process with that environment, fetches
the project with download_project(bucket, name)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from conftest import BACKENDS, HERE, MIB, http

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")

import django  # noqa: E402

django.setup()

from django.test import Client, override_settings  # noqa: E402

from djangoapp import jobs  # noqa: E402

PLATFORM = {"fs": "local", "local_s3": "local", "aws_seaweed": "aws", "aws_moto": "aws", "gcp": "gcp"}
_ids = itertools.count()


def project_zip(size: int, seed: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("Dockerfile", "FROM scratch\nCOPY app /app\n")
        z.writestr("app/payload.bin", os.urandom(size))
    return buf.getvalue()


@pytest.mark.parametrize("kind", BACKENDS)
def test_deploy_view_stores_the_upload_and_the_job_fetches_it(kind, make_backend, monkeypatch, tmp_path):
    b = make_backend(kind)
    monkeypatch.setenv("CREDHOST_CONFIG", str(b.config))
    client = Client()
    # In memory (below FILE_UPLOAD_MAX_MEMORY_SIZE) and spooled to a temporary file.
    for size in [50_000, 6 * MIB]:
        project_id = int(time.time() * 1000) % 10**9 * 1000 + next(_ids) % 1000
        data = project_zip(size, project_id)
        upload = tmp_path / "upload.zip"
        upload.write_bytes(data)
        with override_settings(CREDENTIALS=PLATFORM[kind]), open(upload, "rb") as fh:
            response = client.post(f"/projects/{project_id}/deploy", {"project": fh})
        assert response.status_code == 200, response.content
        name = response.json()["project"]
        b._made.append(name)
        assert name == f"{project_id}.zip"

        job = jobs.LAUNCHED[-1]
        assert job["name"] == f"build-{project_id}"
        env = {e["name"]: e["value"] for e in job["env"]}
        assert all(type(v) is str for v in env.values()), "a job spec carries plain values"
        assert env["PROJECTS_BUCKET"] == b.bucket
        token = env["REGISTRY_TOKEN"]
        user, _, password = base64.b64decode(token).decode().partition(":")
        assert user and password
        if kind in ("fs", "local_s3"):
            # The rendered token logs in to the registry as it is.
            status, _ = http("GET", f"http://{env['REGISTRY']}/v2/", headers={"Authorization": f"Basic {token}"})
            assert status == 200

        # The job: its own process, the rendered environment, the original call.
        command = [sys.executable, "-m", *job["command"][2:]]
        out = subprocess.run(
            command,
            env={**os.environ, **env, "CREDENTIALS": PLATFORM[kind]},
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        fetched = json.loads(out.stdout)
        assert fetched["entries"] == ["Dockerfile", "app/payload.bin"]
        with open(fetched["path"], "rb") as f:
            assert f.read() == data, "byte-identical"


def test_deploy_view_without_a_file_is_a_bad_request(make_backend, monkeypatch):
    b = make_backend("fs")
    monkeypatch.setenv("CREDHOST_CONFIG", str(b.config))
    assert Client().post("/projects/1/deploy", {}).status_code == 400
