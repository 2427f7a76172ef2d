"""The issuance audit log from Python: the caller's label in each line
(``with_audit_label``), and processes sharing one log file writing whole
lines."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

import credhost
from conftest import release_dir

KEY = "audit-key-for-the-python-tests-0123456789"


def write_config(svc, directory, required: bool = True):
    basic = (
        f'{{ url = "http://{svc["CREDHOST_TEST_REGISTRY_BASIC"]}", auth = "basic", '
        'username_env = "REG_USER", password_env = "REG_PASS" }'
    )
    config = directory / "plugins.toml"
    config.write_text(
        f'platform = "local"\nplugin_dir = "{release_dir()}"\n'
        f'\n[audit]\npath = "audit.log"\nkey_env = "CREDHOST_TEST_AUDIT_KEY"\nrequired = {str(required).lower()}\n'
        f'\n[plugins.local.settings]\nregistry = {basic}\n'
        'storage = { kind = "fs", root = "store", bucket = "projects" }\n'
    )
    return config


def issue(config: str, label: str, count: int) -> None:
    """``count`` registry tokens from 8 threads, labelled ``label``."""
    creds = credhost.Credentials(config=config).with_audit_label(label)
    with ThreadPoolExecutor(8) as pool:
        for token in pool.map(lambda _: creds.get_registry_token(), range(count)):
            assert token is not None


def test_four_processes_sharing_the_log_write_whole_lines(services, tmp_path, monkeypatch):
    monkeypatch.setenv("CREDHOST_TEST_AUDIT_KEY", KEY)
    config = write_config(services, tmp_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=issue, args=(os.fspath(config), f"worker {i}", 1000)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0, f"a worker failed: {p.exitcode}"
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert len(lines) == 4000
    records = [json.loads(line) for line in lines]
    assert len({r["request_id"] for r in records}) == 4000
    for i in range(4):
        assert sum(r["label"] == f"worker {i}" for r in records) == 1000
    assert all(r["operation"] == "token" and r["outcome"] == "ok" for r in records)
    password = services["CREDHOST_TEST_REGISTRY_PASSWORD"]
    assert password not in (tmp_path / "audit.log").read_text()


def test_labels_and_a_missing_key(services, tmp_path, monkeypatch):
    config = write_config(services, tmp_path)
    monkeypatch.delenv("CREDHOST_TEST_AUDIT_KEY", raising=False)
    with pytest.raises(credhost.ConfigError, match="CREDHOST_TEST_AUDIT_KEY"):
        credhost.Credentials(config=config).get_registry_token()
    monkeypatch.setenv("CREDHOST_TEST_AUDIT_KEY", KEY)
    creds = credhost.Credentials(config=config)
    labelled = creds.with_audit_label("deploy 7 by alice")
    assert labelled.platform == creds.platform
    creds.get_registry_token()
    labelled.get_registry_token()
    labelled.get_credentials()
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(r["operation"], r.get("label")) for r in records] == [
        ("token", None),
        ("token", "deploy 7 by alice"),
        ("credentials", "deploy 7 by alice"),
    ]


def test_create_only_uploads(services, tmp_path, monkeypatch):
    """``overwrite=False`` stores a name once; a second upload of it raises
    ``AlreadyExists`` and leaves the first one's bytes."""
    monkeypatch.setenv("CREDHOST_TEST_AUDIT_KEY", KEY)
    config = write_config(services, tmp_path, required=False)
    creds = credhost.Credentials(config=config).with_audit_label("deploy 9 by bob")
    put = creds.upload_project("9/1.zip", b"first", overwrite=False)
    assert put.create_only == "enforced"
    with pytest.raises(credhost.AlreadyExists, match="exists already"):
        creds.upload_project("9/1.zip", b"second", overwrite=False)
    assert (tmp_path / "store/projects/9/1.zip").read_bytes() == b"first"
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    uploads = [(r["outcome"], r["create_only"], r["label"]) for r in records if r["operation"] == "upload"]
    assert uploads == [("ok", "enforced", "deploy 9 by bob"), ("failed", "enforced", "deploy 9 by bob")]
