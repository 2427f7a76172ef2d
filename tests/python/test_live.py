"""LiveCredentials follows plugins.toml as the library's LiveHost does: a
valid change of platform is swapped in, a broken one is rejected while the
old platform keeps serving, and a forked child watches the file itself."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

import credhost
from conftest import http, release_dir, zip_bytes


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


def test_a_provider_whose_plugin_panicked_is_built_again(services, tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'platform = "panicky"\nplugin_dir = "{release_dir()}"\n'
        '[plugins.panicky]\nfile = "fixture_panicky"\n[plugins.panicky.settings]\npanic_in = "upload"\n'
    )
    live = credhost.LiveCredentials(config, interval=0.2)
    assert live.get_credentials() == {"PANICKY": "serving"}
    with pytest.raises(credhost.Panicked) as e:
        live.upload_project("p.zip", zip_bytes(1000, 1))
    assert e.value.retryable is False
    # The watcher builds the provider again from the file being served:
    # a new generation of the same platform, and it serves.
    status = wait_for(lambda: live.status().generation == 1 and live.status())
    assert status == credhost.SwitchStatus(1, "panicky", None)
    assert live.get_credentials() == {"PANICKY": "serving"}


def test_a_file_caught_half_written_is_never_reported(services, tmp_path):
    """A change is acted on only once the same contents were read twice: a
    file written slowly, each piece there for a fraction of the watcher's
    interval, is never reported as broken, and its final contents apply."""
    config = tmp_path / "plugins.toml"
    config.write_text(config_text(services, "a"))
    interval = 1.0
    live = credhost.LiveCredentials(config, interval=interval)
    live.upload_project("one.zip", zip_bytes(1000, 1))  # starts the watcher
    errors = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            s = live.status()
            if s.last_error:
                errors.append(s.last_error)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        text = config_text(services, "b")
        pieces = 50
        step = -(-len(text) // pieces)
        # Truncated, then written a piece at a time, as a slow writer (or
        # a copy over a network file system) leaves it: each read of the
        # watcher finds a different, incomplete text.
        with open(config, "w") as f:
            for i in range(0, len(text), step):
                f.write(text[i : i + step])
                f.flush()
                time.sleep(interval / 20)
        wait_for(lambda: live.status().platform == "b")
    finally:
        done.set()
        watcher.join()
    assert errors == [], f"a half-written file was reported: {errors[:3]}"
    assert live.status() == credhost.SwitchStatus(1, "b", None)


def token_requests(services, scope: str) -> int:
    """Token requests whose scope holds ``scope``, as the token server counted them."""
    base = services["CREDHOST_TEST_TOKEN_REALM"].rsplit("/", 1)[0]
    status, body = http("GET", f"{base}/_test/stats?scope={scope}")
    assert status == 200, (status, body)
    return json.loads(body)["requests"]


def test_edits_of_other_instances_keep_the_token_cache(services, tmp_path):
    """Only what the active provider is built from makes a new one: an edit
    of another instance (or a broken edit, then its fix) keeps the active
    provider, and so its cached registry token."""
    repository = f"live-cache-{os.getpid()}-{time.time_ns()}"
    token_auth = (
        f'{{ url = "http://{services["CREDHOST_TEST_REGISTRY_TOKEN"]}", auth = "token", '
        f'username_env = "REG_USER", password_env = "REG_PASS", scope = "repository:{repository}:pull" }}'
    )

    def text(other_root: str) -> str:
        return (
            f'platform = "a"\nplugin_dir = "{release_dir()}"\n'
            f'\n[plugins.a]\nplugin = "local"\n[plugins.a.settings]\nregistry = {token_auth}\n'
            'storage = { kind = "fs", root = "store-a", bucket = "projects" }\n'
            f'\n[plugins.b]\nplugin = "local"\n[plugins.b.settings]\nregistry = {token_auth}\n'
            f'storage = {{ kind = "fs", root = "{other_root}", bucket = "projects" }}\n'
        )

    config = tmp_path / "plugins.toml"
    config.write_text(text("store-b"))
    live = credhost.LiveCredentials(config, interval=0.2)
    token = live.get_registry_token()
    assert token is not None and token_requests(services, repository) == 1

    # A broken edit is rejected; the edit of the other instance that follows
    # clears the error, which shows the watcher took that text in.
    config.write_text(text("store-b") + "\n[plugins.c\n")
    wait_for(lambda: live.status().last_error)
    config.write_text(text("store-b2"))
    wait_for(lambda: live.status().last_error is None)
    assert live.get_registry_token() == token
    assert token_requests(services, repository) == 1, "an edit of another instance cost a new token request"
    assert live.status() == credhost.SwitchStatus(0, "a", None), "no new provider"


def test_tokens_are_refreshed_in_the_background(services, tmp_path):
    """A token asked for once is refreshed before its refresh point with
    nobody asking (the token server counts the request), and the next
    caller gets the new token without a request of its own."""
    repository = f"live-ahead-{os.getpid()}-{time.time_ns()}"
    base = services["CREDHOST_TEST_TOKEN_REALM"].rsplit("/", 1)[0]
    rule = json.dumps({"scope": f"repository:{repository}:", "expires_in": 40}).encode()
    status, body = http("POST", f"{base}/_test/lifetime", rule, {"Content-Type": "application/json"})
    assert status == 200, (status, body)
    token_auth = (
        f'{{ url = "http://{services["CREDHOST_TEST_REGISTRY_TOKEN"]}", auth = "token", '
        'username_env = "REG_USER", password_env = "REG_PASS" }'
    )
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'platform = "a"\nplugin_dir = "{release_dir()}"\n'
        f'\n[plugins.a]\nplugin = "local"\n[plugins.a.settings]\nregistry = {token_auth}\n'
        'storage = { kind = "fs", root = "store-a", bucket = "projects" }\n'
    )
    live = credhost.LiveCredentials(config)
    scope = f"repository:{repository}:pull"
    first = live.registry_auth(scope=scope)
    assert first is not None and first.expires_at is not None
    assert token_requests(services, repository) == 1
    # Refresh point 30 s after issue; refreshed ahead of it from about 23 s.
    time.sleep(max(0.0, first.expires_at - 12 - time.time()))
    assert token_requests(services, repository) == 2, "not refreshed in the background"
    second = live.registry_auth(scope=scope)
    assert second.password.reveal() != first.password.reveal()
    assert token_requests(services, repository) == 2, "the caller waited for a request of its own"
