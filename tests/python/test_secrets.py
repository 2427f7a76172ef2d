"""No secret value shows in the repr or str of a result or an exception, nor
in the logs (CREDHOST_LOG), on any backend."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

import credhost
from conftest import HERE, gcp_token_forms, gcp_tokens_issued, gcp_tokens_issued_since, http, zip_bytes


def variants(secrets):
    out = set()
    for s in secrets:
        if len(s) >= 6:
            out.add(s)
            out.add(base64.b64encode(s.encode()).decode())
    return out


def assert_clean(text: str, secrets) -> None:
    for s in variants(secrets):
        assert s not in text, f"a secret value shows in: {text[:300]}"


def test_secret_hides_only_from_repr():
    s = credhost.Secret("hunter2-value")
    assert repr(s) == "Secret('<redacted>')"
    assert str(s) == "hunter2-value" and type(str(s)) is str
    assert f"{s}" == "hunter2-value" and f"{s!r}" == "Secret('<redacted>')"
    assert s.reveal() == "hunter2-value"
    assert repr({"K": s}) == "{'K': Secret('<redacted>')}"
    assert repr([s]) == str([s]) == "[Secret('<redacted>')]"
    assert s == "hunter2-value" and isinstance(s, str)
    import pickle

    back = pickle.loads(pickle.dumps(s))
    assert type(back) is credhost.Secret and back == s


def issued_during(backend, since):
    """The GCP access tokens issued since ``since``, in every form they take;
    at least one, or the test looked for nothing."""
    if since is None:
        return []
    tokens = gcp_tokens_issued_since(backend.svc, since)
    assert tokens, "no access token was issued while the test ran"
    return [form for t in tokens for form in gcp_token_forms(t)]


def test_results_and_exceptions_hold_no_secret(backend, tmp_path, monkeypatch):
    since = gcp_tokens_issued(backend.svc) if backend.kind == "gcp" else None
    c = backend.credentials()
    shown = []
    auth = c.registry_auth()
    secrets = list(backend.secret_values) + [auth.password, str(auth.registry_token)]
    env = c.get_credentials()
    secrets += [v for v in env.values() if isinstance(v, credhost.Secret)]
    name = backend.name("secrets")
    put = c.upload_project(name, zip_bytes(2000, 5))
    shown += [c, auth, env, put, c.check(), c.plugins()]
    # A Secret itself is its value to str() (job environments need it); only its repr hides it.
    assert repr(c.get_registry_token()) == "Secret('<redacted>')"
    if backend.has_urls:
        url = c.presign("GET", backend.bucket, name)
        secrets += [url.url, url.url.split("?", 1)[-1]]
        shown += [url, c.get_credentials(project=(backend.bucket, name))]
    for call in [
        lambda: c.download_project(backend.bucket, backend.name("missing"), tmp_path / "x"),
        lambda: c.upload_project("../bad.zip", b"x"),
        lambda: c.download_project(backend.bucket, name, tmp_path) and c.download_project(backend.bucket, name, tmp_path),
    ]:
        with pytest.raises(credhost.Error) as e:
            call()
        shown.append(e.value)

    # Wrong credentials: the failure names no secret, neither the right one nor the wrong one.
    wrong = "definitely-wrong-secret-value"
    if backend.kind == "local_s3":
        monkeypatch.setenv("TEST_S3_SECRET", wrong)
    elif backend.kind == "aws_seaweed":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    elif backend.kind == "gcp":
        key = json.loads((backend.dir / "key.json").read_text())
        status, other = http("POST", f'{backend.svc["CREDHOST_TEST_GCP_AUTH"]}/_test/service-account?lifetime=3600')
        assert status == 200
        other = json.loads(other)
        key["private_key"] = other["private_key"]
        (backend.dir / "key.json").write_text(json.dumps(key))
        secrets += [l for l in other["private_key"].splitlines() if not l.startswith("-----")][:4]
    if backend.kind in ("local_s3", "aws_seaweed", "gcp"):
        secrets.append(wrong)
        broken = backend.credentials()
        with pytest.raises(credhost.AuthError) as e:
            broken.upload_project(backend.name("wrong"), b"PK\x03\x04data")
        shown.append(e.value)
        with pytest.raises(credhost.CheckFailed) as e:
            broken.check()
        shown += [e.value, e.value.report]

    secrets += issued_during(backend, since)
    for obj in shown:
        assert_clean(repr(obj), secrets)
        assert_clean(str(obj), secrets)
        if isinstance(obj, BaseException):
            assert "\n" not in str(obj)
            assert_clean(repr(obj.args), secrets)


@pytest.mark.parametrize(
    "log_env",
    [{"CREDHOST_LOG": "trace"}, {"CREDHOST_LOG": "trace", "CREDHOST_LOG_DEPENDENCIES": "1"}],
    ids=["trace", "trace-with-dependencies"],
)
def test_logs_hold_no_secret(make_backend, log_env):
    """The logs of a process of its own, which fetches its own tokens: every
    token the GCP endpoint issued meanwhile is looked for."""
    for kind in ["local_s3", "gcp"]:
        b = make_backend(kind)
        since = gcp_tokens_issued(b.svc) if kind == "gcp" else None
        script = (
            "import sys, credhost\n"
            "c = credhost.Credentials(config=sys.argv[1])\n"
            "c.get_registry_token(); c.get_credentials(); c.check()\n"
            "r = c.upload_project(sys.argv[2], b'PK\\x03\\x04' + b'x' * 5000)\n"
            "c.download_project(r.bucket, r.name)\n"
            "c.presign('GET', r.bucket, r.name)\n"
            "print(repr(c.registry_auth()))\n"
        )
        name = b.name("logs")
        out = subprocess.run(
            [sys.executable, "-c", script, str(b.config), name],
            env={**os.environ, **log_env},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=HERE,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "credhost" in out.stderr, "CREDHOST_LOG sends the logs to stderr"
        if "CREDHOST_LOG_DEPENDENCIES" in log_env:
            assert "hyper" in out.stderr or "reqwest" in out.stderr, "the dependencies' records are there"
        c = b.credentials()
        auth = c.registry_auth()
        secrets = b.secret_values + [auth.password, str(auth.registry_token)] + issued_during(b, since)
        assert_clean(out.stdout + out.stderr, secrets)
