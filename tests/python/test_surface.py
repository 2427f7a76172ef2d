"""One library surface for every front end: the Python package answers what
the command line answers, field for field, and routes registry hosts the
same way."""

import dataclasses
import json
import subprocess

import credhost
from conftest import release_dir, zip_bytes


def cli(*args: str) -> str:
    run = subprocess.run([str(release_dir() / "credhost"), *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_a_transfer_has_the_fields_the_command_line_prints(backend, tmp_path):
    src = tmp_path / "src.zip"
    src.write_bytes(zip_bytes(3000, 7))
    put = backend.credentials().upload_project(backend.name("surface"), str(src))
    printed = json.loads(cli("--config", str(backend.config), "upload", str(src), "--name", put.name, "--json"))
    shown = {k: v for k, v in dataclasses.asdict(put).items() if v is not None}
    assert set(shown) == set(printed)
    # The second upload of the name is a new version of the object (GCS).
    assert {k: v for k, v in shown.items() if k != "generation"} == {
        k: v for k, v in printed.items() if k != "generation"
    }


def test_registry_auth_is_routed_as_the_command_line_routes_it(make_backend, tmp_path):
    b = make_backend("fs")
    mapped = tmp_path / "plugins.toml"
    mapped.write_text(
        b.config.read_text().replace('root = "store"', f'root = "{b.dir}/store"')
        + '\n[registries]\n"mirror.example:5000" = "local"\n'
    )
    c = credhost.Credentials(config=mapped)
    own = c.registry_auth()
    got = c.registry_auth("mirror.example:5000")
    printed = json.loads(cli("--config", str(mapped), "token", "--registry", "mirror.example:5000", "--format", "json"))
    assert got.server == printed["server"] == "mirror.example:5000"
    assert got.username == printed["username"] == own.username
    assert got.password == printed["password"] == own.password


def test_registry_auth_needs_no_active_provider(make_backend, tmp_path):
    """A host served by another instance is answered even when the active
    instance's plugin cannot be loaded (as `credhost token --registry`)."""
    b = make_backend("fs")
    text = b.config.read_text().replace('root = "store"', f'root = "{b.dir}/store"')
    broken = text.replace("[plugins.local.settings]", f'[plugins.broken]\nplugin = "local"\nsha256 = "{"0" * 64}"\n[plugins.broken.settings]\nregistry = {{ url = "http://127.0.0.1:1" }}\nstorage = {{ kind = "fs", root = "x", bucket = "projects" }}\n\n[plugins.local.settings]', 1)
    broken = broken.replace('platform = "local"', 'platform = "broken"', 1)
    config = tmp_path / "plugins.toml"
    config.write_text(broken)
    c = credhost.Credentials(config=config)
    served = json.loads(cli("--config", str(config), "--platform", "local", "token", "--format", "json"))["server"]
    got = c.registry_auth(served)
    assert got is not None and got.server == served
