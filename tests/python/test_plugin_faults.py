"""Plugins that panic or hang, driven through Credentials: each costs one
call, which raises Panicked or Timeout (with whether a retry may help), and
the object goes on serving. The plugins are the test fixtures the Rust
tests load (tests/fixtures/panicky and raw)."""

from __future__ import annotations

import time

import pytest

import credhost
from conftest import release_dir, zip_bytes


def fixture_config(tmp_path, instance: str, file: str, settings: str, limits: str = ""):
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'platform = "{instance}"\nplugin_dir = "{release_dir()}"\n'
        f'[plugins.{instance}]\nfile = "{file}"\n{limits}\n[plugins.{instance}.settings]\n{settings}\n'
    )
    return config


def test_a_panic_raises_panicked_and_the_provider_is_built_again(services, tmp_path):
    c = credhost.Credentials(config=fixture_config(tmp_path, "panicky", "fixture_panicky", 'panic_in = "upload"'))
    assert c.get_credentials() == {"PANICKY": "serving"}
    with pytest.raises(credhost.Panicked) as e:
        c.upload_project("p.zip", zip_bytes(1000, 1))
    assert e.value.kind == "panicked" and "upload panicked on purpose" in str(e.value), e.value
    # The same call would panic again: nothing says a retry may help.
    assert e.value.retryable is False
    # The next call gets a provider built again, which serves.
    assert c.get_credentials() == {"PANICKY": "serving"}
    assert c.check().ok


def test_a_plugin_panicking_everywhere(services, tmp_path):
    c = credhost.Credentials(config=fixture_config(tmp_path, "panicky", "fixture_panicky", ""))
    for call in [c.get_credentials, c.get_registry_token, c.registry_auth, lambda: c.check(raise_on_failure=False)]:
        with pytest.raises(credhost.Panicked) as e:
            call()
        assert "panicked on purpose" in str(e.value) and e.value.retryable is False, e.value
    c = credhost.Credentials(
        config=fixture_config(tmp_path, "panicky", "fixture_panicky", 'panic_in = "new"'),
    )
    with pytest.raises(credhost.Panicked, match="constructor panicked on purpose") as e:
        c.get_credentials()
    assert e.value.retryable is False


def test_a_hung_plugin_times_out(services, tmp_path):
    c = credhost.Credentials(
        config=fixture_config(
            tmp_path, "raw", "fixture_raw", 'mode = "hang"', limits="timeout = 2\ntransfer_idle_timeout = 2"
        )
    )
    for what, call in [
        ("credentials", c.get_credentials),
        ("registry", c.get_registry_token),
        ("upload", lambda: c.upload_project("h.zip", zip_bytes(1000, 2))),
    ]:
        started = time.monotonic()
        with pytest.raises(credhost.Timeout) as e:
            call()
        took = time.monotonic() - started
        assert 1.5 < took < 15, (what, took)
        assert e.value.kind == "timed_out" and e.value.retryable is True, (what, e.value)
        assert "2 s" in str(e.value), (what, str(e.value))
