"""LiveCredentials follows plugins.toml as the library's LiveHost does: a
valid change of platform is swapped in, a broken one is rejected while the
old platform keeps serving, and a forked child watches the file itself."""

from __future__ import annotations

import json
import os
import time

import pytest

import credhost
from conftest import release_dir, zip_bytes


def config_text(svc, platform: str, broken: bool = False) -> str:
    basic = (
        f'{{ url = "http://{svc["CREDHOST_TEST_REGISTRY_BASIC"]}", auth = "basic", '
        'username_env = "REG_USER", password_env = "REG_PASS" }'
    )
    text = f'platform = "{platform}"\nplugin_dir = "{release_dir()}"\n'
    for name in ["a", "b"]:
        storage = f'{{ kind = "fs", root = "store-{name}", bucket = "projects" }}'
        if broken and name == platform:
            storage = '{ kind = "fs", root = "store", colour = "red" }'
        text += f'\n[plugins.{name}]\nplugin = "local"\n[plugins.{name}.settings]\nregistry = {basic}\nstorage = {storage}\n'
    return text


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_switches_and_rejects(services, tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text(config_text(services, "a"))
    live = credhost.LiveCredentials(config, interval=0.2)
    assert not live._core.is_started()
    assert live.status() == credhost.SwitchStatus(0, "a", None)
    assert live.platform == "a"
    live.upload_project("one.zip", zip_bytes(1000, 1))
    assert (tmp_path / "store-a/projects/one.zip").exists()

    config.write_text(config_text(services, "b"))
    wait_for(lambda: live.status().platform == "b")
    assert live.status().generation == 1
    live.upload_project("two.zip", zip_bytes(1000, 2))
    assert (tmp_path / "store-b/projects/two.zip").exists()
    assert live.get_credentials()["CREDHOST_STORAGE_ROOT"].endswith("store-b")

    config.write_text(config_text(services, "a", broken=True))
    status = wait_for(lambda: live.status().last_error and live.status())
    assert status.platform == "b" and "colour" in status.last_error
    live.upload_project("three.zip", zip_bytes(1000, 3))
    assert (tmp_path / "store-b/projects/three.zip").exists(), "the old platform keeps serving"
    with pytest.raises(credhost.ConfigError):
        live.reload()

    config.write_text(config_text(services, "a"))
    assert live.reload() is True
    assert live.status() == credhost.SwitchStatus(2, "a", None)
    assert [p.name for p in live.plugins() if p.status == "loaded"] == ["a", "b"]


def test_a_forked_child_watches_the_file_itself(services, tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text(config_text(services, "a"))
    live = credhost.LiveCredentials(config, interval=0.2)
    live.upload_project("parent.zip", zip_bytes(1000, 1))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = {"first": live.status().platform}
            live.upload_project("child-a.zip", zip_bytes(1000, 2))
            # The parent edits the file now; this child's own watcher sees it.
            os.write(w, b"ready\n")
            wait_for(lambda: live.status().platform == "b")
            live.upload_project("child-b.zip", zip_bytes(1000, 3))
            out["then"] = live.status().platform
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = {"error": repr(e)}
        os.write(w, json.dumps(out).encode() + b"\n")
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.readline() == b"ready\n"
        config.write_text(config_text(services, "b"))
        deadline = time.monotonic() + 60
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the child hung")
            time.sleep(0.1)
        got = json.loads(f.readline())
    assert got == {"first": "a", "then": "b"}
    assert (tmp_path / "store-a/projects/child-a.zip").exists()
    assert (tmp_path / "store-b/projects/child-b.zip").exists()
    wait_for(lambda: live.status().platform == "b")
