"""Credentials.grant: the library's grant as the Python package returns it."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import time

import pytest

import credhost
import credhost.aio
from conftest import release_dir, unique


def token_config(services, tmp_path):
    text = (
        f'platform = "local"\nplugin_dir = "{release_dir()}"\n\n[plugins.local.settings]\n'
        f'registry = {{ url = "http://{services["CREDHOST_TEST_REGISTRY_TOKEN"]}", auth = "token", '
        'username_env = "REG_USER", password_env = "REG_PASS" }\n'
        'storage = { kind = "fs", root = "store", bucket = "projects" }\n'
    )
    path = tmp_path / "plugins.toml"
    path.write_text(text)
    return path


def test_a_grant_of_a_token_registry(services, tmp_path):
    c = credhost.Credentials(config=token_config(services, tmp_path))
    repo, base = unique("py-granted"), unique("py-base")
    g = c.grant("projects/app.zip", repository=repo, pull=[base], ttl=datetime.timedelta(minutes=30))
    assert isinstance(g, credhost.Grant)
    assert g.registry_scope == "repository"
    assert g.entries["REGISTRY_REPOSITORY"] == repo
    assert g.entries["CREDHOST_GRANT_REGISTRY_SCOPE"] == "repository"
    token = g.entries["REGISTRY_TOKEN"]
    assert isinstance(token, credhost.Secret) and "<redacted>" in repr(g)
    config = json.loads(g.entries["DOCKER_CONFIG_JSON"])
    bearer = config["auths"][services["CREDHOST_TEST_REGISTRY_TOKEN"]]["registrytoken"]
    assert base64.b64decode(token).decode() == f'{services["CREDHOST_TEST_REGISTRY_USER"]}:{bearer}'
    assert services["CREDHOST_TEST_REGISTRY_PASSWORD"] not in repr(g) + str(dict(g.entries))
    # It ends within the 30 minutes asked for (sooner when the token server's tokens do).
    assert time.time() < g.expires_at <= time.time() + 1805
    assert g.entries["CREDHOST_GRANT_EXPIRES_AT"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(g.expires_at))
    parts = {p.part: p for p in g.parts}
    assert parts["registry"].scope == "repository" and parts["project"].scope == "shared-directory"
    # The same from a tuple, and from asyncio.
    g2 = asyncio.run(
        credhost.aio.Credentials(config=c.config_path).grant(("projects", "app.zip"), repository=repo)
    )
    assert g2.registry_scope == "repository"


def test_refusals_say_what_to_do(services, tmp_path):
    c = credhost.Credentials(config=token_config(services, tmp_path))
    with pytest.raises(credhost.InvalidInput, match="15 minutes to 12 hours"):
        c.grant("projects/app.zip", ttl=600)
    with pytest.raises(credhost.InvalidInput, match="not a repository name"):
        c.grant("projects/app.zip", repository="Not/Valid")
    with pytest.raises(credhost.InvalidInput, match="BUCKET/NAME"):
        c.grant("app.zip")
    with pytest.raises(TypeError):
        c.grant("projects/app.zip", pull="one-string")


def test_a_basic_registry_is_wider_only_when_accepted(make_backend):
    c = make_backend("fs").credentials()
    with pytest.raises(credhost.InvalidInput, match="basic auth"):
        c.grant("projects/app.zip", repository="app")
    g = c.grant("projects/app.zip", repository="app", allow_unscoped_registry=True)
    assert g.registry_scope == "registry"
    assert g.entries["CREDHOST_GRANT_REGISTRY_SCOPE"] == "registry"
