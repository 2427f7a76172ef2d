"""The values credhost returns. Secret values are :class:`Secret`, whose
``repr`` is redacted, so results can be logged and shown in tracebacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

__all__ = [
    "Secret",
    "TransferResult",
    "RegistryAuth",
    "Presigned",
    "Grant",
    "GrantPart",
    "CheckItem",
    "CheckReport",
    "PluginStatus",
    "SwitchStatus",
    "ProcessState",
]

REDACTED = "<redacted>"


class Secret(str):
    """A secret value: a ``str`` that hides itself from ``repr``.

    ``str(secret)``, ``f"{secret}"`` and every string operation give the value
    itself, because a build job's environment needs it. ``repr(secret)`` --
    what tracebacks, debuggers, ``print(dict)`` and ``%r`` log lines show --
    is ``Secret('<redacted>')``. Format a secret into a log message with
    ``%r`` / ``!r``, never ``%s``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def reveal(self) -> str:
        """The value as a plain ``str`` (whose ``repr`` shows it)."""
        return str.__str__(self)

    def __reduce__(self) -> Tuple[type, Tuple[str]]:
        return (Secret, (str.__str__(self),))


@dataclass(frozen=True)
class TransferResult:
    """A stored or fetched project archive."""

    bucket: str
    """The bucket the object is in."""
    name: str
    """The object name."""
    size: int
    """Its size in bytes."""
    checksum: str
    """``algorithm:hex`` of the whole content, e.g. ``crc32c:1a2b3c4d``."""
    location: Optional[str] = None
    """Where the object is (``s3://b/k``, ``gs://b/k`` or a path), when the plugin says."""
    generation: Optional[str] = None
    """The store's version of the object (a GCS generation), when it has one."""
    create_only: Optional[str] = None
    """For ``overwrite=False``: ``"enforced"`` (by the store, atomically) or
    ``"best-effort"`` (looked for, then written: racy)."""


@dataclass(frozen=True)
class RegistryAuth:
    """Registry credentials."""

    server: str
    """The registry host (``host[:port]``)."""
    username: str
    """The user name to present."""
    password: Secret
    """The password or token."""
    expires_at: Optional[int]
    """Unix time (seconds) after which the password stops working, when known."""
    kind: str
    """``"basic"`` (user name and password; also when the plugin does not say) or ``"bearer"`` (a registry bearer token)."""
    registry_token: Secret
    """The ``REGISTRY_TOKEN`` form build jobs expect: base64 of ``username:password``."""


@dataclass(frozen=True)
class Presigned:
    """A time-limited URL. The URL is a credential: whoever holds it can use it."""

    method: str
    """``GET`` or ``PUT``."""
    url: Secret
    """The URL."""
    headers: Dict[str, str]
    """Headers a client must send with it."""
    expires_at: int
    """Unix time (seconds) after which the URL stops working."""


@dataclass(frozen=True)
class GrantPart:
    """What one part of a :class:`Grant` is limited to."""

    part: str
    """``project``, ``registry`` or ``keys``."""
    scope: str
    """``object``, ``repository``, ``account``, ``registry``, ``none``, or a platform word."""
    detail: str
    """What it allows, one line."""
    expires_at: Optional[int]
    """Unix time (seconds) after which it stops working, when known."""


@dataclass(frozen=True)
class Grant:
    """What one build job is granted (``Credentials.grant``): its entries
    (``PROJECT_URL``, ``REGISTRY``, ``REGISTRY_TOKEN``, ``DOCKER_CONFIG_JSON``,
    ``CREDHOST_GRANT_EXPIRES_AT``, ...; secrets are :class:`Secret`), when it
    stops working, and what each part is limited to."""

    entries: Dict[str, str]
    """The job's environment entries."""
    expires_at: int
    """Unix time (seconds) after which the grant stops working."""
    registry_scope: Optional[str]
    """``repository``, ``account`` or ``registry`` (accepted wider); ``None`` without a registry credential."""
    parts: Tuple[GrantPart, ...]
    """What each part is limited to."""


@dataclass(frozen=True)
class CheckItem:
    """One probe of ``check()``."""

    component: str
    """What was probed, e.g. ``storage`` or ``registry``."""
    ok: bool
    """Whether it answered as expected."""
    detail: str
    """What was found, one line."""


@dataclass(frozen=True)
class CheckReport:
    """Every probe ``check()`` ran."""

    items: Tuple[CheckItem, ...] = field(default_factory=tuple)
    """The probes."""

    @property
    def ok(self) -> bool:
        """Whether every probe passed."""
        return all(i.ok for i in self.items)

    def failures(self) -> Tuple[CheckItem, ...]:
        """The probes that failed."""
        return tuple(i for i in self.items if not i.ok)


@dataclass(frozen=True)
class PluginStatus:
    """One configured instance and how its plugin file fared, or a plugin
    file of the plugin directory that no instance uses (never loaded)."""

    name: str
    """The instance name (for an unconfigured file, the name its file suggests)."""
    plugin: str
    """The plugin the instance runs."""
    version: Optional[str]
    """The plugin's version, when it loaded."""
    api_version: Optional[str]
    """The plugin interface version it was built against, when it loaded."""
    capabilities: Tuple[str, ...]
    """What the plugin offers, when it loaded."""
    description: Optional[str]
    """The plugin's one-line description, when it loaded and has one."""
    path: Optional[str]
    """The plugin file."""
    sha256: Optional[str]
    """The file's sha256, when readable."""
    status: str
    """``loaded``, ``refused: <reason>`` or ``not configured (not loaded)``."""
    isolation: str = "in-process"
    """Where the instance's plugin runs: ``in-process`` or ``process`` (a
    child process of its own); ``-`` for a file no instance uses."""
    pid: Optional[int] = None
    """With ``isolation = "process"``, the pid of the instance's child when
    this object's provider runs one (listing plugins starts nothing)."""


@dataclass(frozen=True)
class ProcessState:
    """The plugin process of an instance with ``isolation = "process"``."""

    pid: Optional[int] = None
    """The running child's pid; ``None`` while none runs (idle, or between a crash and the next call)."""
    crashes_in_a_row: int = 0
    """Calls failed by a dying child since the last answered call."""
    last_exit: Optional[str] = None
    """How the last child that failed a call ended (``SIGSEGV``, ``exit status 0``)."""
    next_start_waits: Optional[float] = None
    """Seconds the next start still waits, after crashes in a row."""


@dataclass(frozen=True)
class SwitchStatus:
    """What a :class:`credhost.LiveCredentials` is serving."""

    generation: int
    """Counts provider swaps: 0 for the provider it started with."""
    platform: str
    """The active platform (instance)."""
    last_error: Optional[str]
    """Why the file's current contents were rejected; ``None`` when what the file says is served."""
    process: Optional[ProcessState] = None
    """With ``isolation = "process"``, the active instance's plugin process, once one was started."""
