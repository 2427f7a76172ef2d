"""The exceptions of credhost, one class per thing the caller does next.

The native part raises these for the library's error kinds. Messages are the
library's: one line, never a secret value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ._types import CheckReport

__all__ = [
    "Error",
    "NotFound",
    "AuthError",
    "InvalidInput",
    "ConfigError",
    "PluginRefused",
    "Unsupported",
    "AlreadyExists",
    "CheckFailed",
    "Unavailable",
    "Timeout",
    "Cancelled",
    "Panicked",
]


class Error(Exception):
    """Base class of every credhost error; raised as is for other failures
    (a local I/O error, corrupt data, an internal error).

    Attributes:
        kind: the library's error kind as a string (``"not_found"``,
            ``"unauthenticated"``, ``"timed_out"``, ..., ``"other"``).
        retryable: whether the same call may succeed if tried again later.
    """

    kind: str = "other"
    retryable: bool = False

    def __init__(self, message: str = "", kind: Optional[str] = None, retryable: bool = False) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        self.retryable = retryable

    @property
    def message(self) -> str:
        """The one-line message."""
        return str(self.args[0]) if self.args else ""


class NotFound(Error):
    """The object, bucket, registry or plugin file does not exist: check the name."""

    kind = "not_found"


class AuthError(Error):
    """Credentials are missing, were rejected, or do not allow this: fix the
    credentials or their permissions."""

    kind = "unauthenticated"


class InvalidInput(Error):
    """An argument is invalid (a project name, a file that is not a ZIP
    archive, a registry host): fix the input; retrying cannot help."""

    kind = "invalid_input"


class ConfigError(Error):
    """The configuration (``plugins.toml`` or a plugin's settings) is
    invalid: fix the file. The message names the file, line and key."""

    kind = "config"


class PluginRefused(Error):
    """A plugin file was refused (pin mismatch, unsafe permissions, not a
    plugin, incompatible interface): replace or re-pin the file."""

    kind = "plugin_refused"


class Unsupported(Error):
    """The plugin does not offer this operation (e.g. presigned URLs on the
    filesystem store)."""

    kind = "unsupported"


class AlreadyExists(Error):
    """The destination exists and replacing it was not asked for (``force=True``)."""

    kind = "already_exists"


class CheckFailed(Error):
    """A ``check()`` ran and a probe failed (or did not finish).

    Attributes:
        report: the :class:`credhost.CheckReport`, when the probes ran.
    """

    kind = "check_failed"
    report: Optional[CheckReport] = None


class Unavailable(Error):
    """The service could not be reached or failed; retrying later may help."""

    kind = "unavailable"


class Timeout(Error):
    """The operation did not finish within its deadline and was cancelled."""

    kind = "timed_out"


class Cancelled(Error):
    """The operation was cancelled before it finished (nothing partial is left)."""

    kind = "cancelled"


class Panicked(Error):
    """The plugin panicked; its provider is built again on the next call."""

    kind = "panicked"
