"""credhost: deployment credentials through provider plugins.

A drop-in for the deployment service's ``Credentials`` module, over the
credhost host library (the same plugins, ``plugins.toml``, deadlines and
token cache as the ``credhost`` command)::

    from credhost import Credentials

    creds = Credentials()                              # ./plugins.toml or $CREDHOST_CONFIG
    creds.upload_project("1234.zip", uploaded_file)    # bytes, a path or a binary file-like object
    token = creds.get_registry_token()                 # REGISTRY_TOKEN, or None
    env = creds.get_credentials()                      # the build job's entries; secrets are Secret
    path = creds.download_project("projects", "1234.zip")

Nothing starts at import or construction: the host runtime and the plugin's
provider are made on first use, once per process, and again in a child after
``fork()``. :mod:`credhost.aio` has the same operations as awaitables.

Errors are subclasses of :class:`Error`, one per thing to do next
(:class:`NotFound`, :class:`AuthError`, :class:`ConfigError`, ...).
Secret values are :class:`Secret`, whose ``repr`` is redacted.
"""

from . import _client, _errors, _types
from ._client import *  # noqa: F401,F403  (each module's __all__)
from ._credhost import __version__
from ._errors import *  # noqa: F401,F403
from ._types import *  # noqa: F401,F403

__all__ = [*_client.__all__, *_types.__all__, *_errors.__all__, "__version__"]

# Shown as credhost.NotFound, credhost.Secret, ... in tracebacks and reprs;
# pickles (multiprocessing results) find them there too.
for _name in __all__:
    if _name != "__version__":
        globals()[_name].__module__ = __name__
del _name


def _use_this_interpreter_as_plugin_runner() -> None:
    """Plugin processes (``isolation = "process"``) run in this interpreter
    (isolated mode: no current directory, user site or ``PYTHON*`` variables
    on its path), serving the host through this package's native module,
    so the package needs no separate runner program. A runner named by
    ``CREDHOST_PLUGIN_RUNNER`` still wins."""
    import os
    import sys

    if not sys.executable:
        return
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from credhost._credhost import _plugin_runner_main; sys.exit(_plugin_runner_main())"
    )
    # The interpreter's file itself (a venv's python is a link, and links
    # are refused when the runner is vetted).
    _credhost._set_plugin_runner(os.path.realpath(sys.executable), ["-I", "-S", "-c", code, package_parent])


from . import _credhost  # noqa: E402

_use_this_interpreter_as_plugin_runner()
del _use_this_interpreter_as_plugin_runner
