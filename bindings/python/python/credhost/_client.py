"""``Credentials`` and ``LiveCredentials``: the deployment service's interface
over the native host."""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _credhost
from ._errors import CheckFailed, InvalidInput
from ._types import (
    CheckItem,
    CheckReport,
    Grant,
    GrantPart,
    PluginStatus,
    Presigned,
    ProcessState,
    RegistryAuth,
    Secret,
    SwitchStatus,
    TransferResult,
)

__all__ = ["Credentials", "LiveCredentials", "reopen_audit_log"]

PathLike = Union[str, "os.PathLike[str]"]


def reopen_audit_log() -> None:
    """Opens every audit log file (``[audit]`` in ``plugins.toml``) of this
    process again before its next line: call it from a SIGHUP handler after
    rotating the log by copying. (A log rotated by renaming or removing its
    file is noticed without it.)"""
    _credhost._reopen_audit_log()


def _process_state(row: Optional[Dict[str, Any]]) -> Optional[ProcessState]:
    if row is None:
        return None
    # Only the fields this package knows: a newer library may report more.
    known = {f.name for f in dataclasses.fields(ProcessState)}
    return ProcessState(**{k: v for k, v in row.items() if k in known})
Expires = Union[int, float, datetime.timedelta]

_Token = Optional[_credhost.CancelToken]

#: ``progress(done, total)``: bytes transferred so far, and the total when known.
ProgressCallback = Callable[[int, Optional[int]], Any]


def _progress(progress: Optional[ProgressCallback]) -> Optional[ProgressCallback]:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable progress(done, total), not {type(progress).__name__}")
    return progress


def _seconds(expires: Expires) -> float:
    if isinstance(expires, datetime.timedelta):
        return expires.total_seconds()
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise TypeError("expires must be seconds (int or float) or a datetime.timedelta")
    return float(expires)


class _BufferReader:
    """``read(n)`` over a bytes-like object, a slice at a time (no copy of the whole)."""

    __slots__ = ("_view", "_pos")

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def read(self, n: int = -1) -> memoryview:
        end = len(self._view) if n is None or n < 0 else self._pos + n
        chunk = self._view[self._pos : end]
        self._pos += len(chunk)
        return chunk


def _size_hint(obj: Any) -> Optional[int]:
    """The bytes left in a file-like object, when it says (only for progress)."""
    size = getattr(obj, "size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    try:
        left = os.fstat(obj.fileno()).st_size - obj.tell()
    except Exception:
        return None
    return left if left >= 0 else None


class _Client:
    """The operations, each taking the cancel token the asyncio wrappers set."""

    _core: _credhost.Core

    # -- registry

    def _registry_auth(self, registry: Optional[str], scope: Optional[str], cancel: _Token) -> Optional[RegistryAuth]:
        got = self._core.registry_auth(registry, scope, cancel)
        if got is None:
            return None
        return RegistryAuth(**{**got, "password": Secret(got["password"]), "registry_token": Secret(got["registry_token"])})

    def _get_registry_token(self, cancel: _Token) -> Optional[Secret]:
        auth = self._registry_auth(None, None, cancel)
        return None if auth is None else auth.registry_token

    # -- projects

    def _upload_project(
        self,
        project_name: str,
        project_obj: Any,
        verify: bool,
        cancel: _Token,
        progress: Optional[ProgressCallback] = None,
        overwrite: bool = True,
    ) -> TransferResult:
        if not isinstance(project_name, str):
            raise TypeError("project_name must be a str")
        progress = _progress(progress)
        if isinstance(project_obj, (bytes, bytearray, memoryview)):
            view = memoryview(project_obj)
            if not view.c_contiguous:
                raise TypeError("project_obj: a memoryview must be contiguous")
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            got = self._core.upload_stream(
                _BufferReader(view), project_name, view.nbytes, cancel, progress, if_absent=not overwrite
            )
        elif isinstance(project_obj, (str, os.PathLike)):
            got = self._core.upload_path(
                os.fspath(project_obj), project_name, verify, cancel, progress, if_absent=not overwrite
            )
        elif callable(getattr(project_obj, "read", None)):
            got = self._core.upload_stream(
                project_obj, project_name, _size_hint(project_obj), cancel, progress, if_absent=not overwrite
            )
        else:
            raise TypeError(
                "project_obj must be bytes-like, a path, or a binary file-like object with read(n), "
                f"not {type(project_obj).__name__}"
            )
        return TransferResult(**got)

    def _download_project(
        self,
        bucket_name: str,
        project_name: str,
        dest: Optional[PathLike],
        force: bool,
        cancel: _Token,
        progress: Optional[ProgressCallback] = None,
    ) -> str:
        _credhost.Core.validate_name(project_name)
        progress = _progress(progress)
        leaf = project_name.rsplit("/", 1)[-1]
        made = None
        if dest is None:
            made = tempfile.mkdtemp(prefix="credhost-")
            target = os.path.join(made, leaf)
        else:
            dest = os.fsdecode(os.fspath(dest))
            target = os.path.join(dest, leaf) if os.path.isdir(dest) else dest
        try:
            self._core.download(bucket_name, project_name, target, force, cancel, progress)
        except BaseException:
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            raise
        return target

    def _delete_project(self, bucket_name: str, project_name: str, cancel: _Token) -> None:
        self._core.delete(bucket_name, project_name, cancel)

    def _presign(
        self, method: str, bucket_name: Optional[str], project_name: str, expires: Expires, cancel: _Token
    ) -> Presigned:
        if not isinstance(method, str):
            raise TypeError("method must be 'GET' or 'PUT'")
        if bucket_name is None:
            if method.upper() != "PUT":
                raise InvalidInput("a GET URL needs the bucket name")
            bucket_name = ""
        got = self._core.presign(method, bucket_name, project_name, _seconds(expires), cancel)
        return Presigned(**{**got, "url": Secret(got["url"])})

    # -- build jobs

    def _get_credentials(
        self, project: Optional[Tuple[str, str]], expires: Expires, cancel: _Token
    ) -> Dict[str, str]:
        entries = self._core.credentials(cancel)
        result: Dict[str, str] = {e["key"]: Secret(e["value"]) if e["secret"] else e["value"] for e in entries}
        if project is not None:
            bucket_name, project_name = project
            result["PROJECT_URL"] = self._presign("GET", bucket_name, project_name, expires, cancel).url
        return result

    def _grant(
        self,
        project: Union[str, Tuple[str, str]],
        repository: Optional[str],
        pull: Iterable[str],
        ttl: Expires,
        with_keys: bool,
        allow_unscoped_registry: bool,
        session_name: Optional[str],
        cancel: _Token,
    ) -> Grant:
        if isinstance(project, str):
            bucket_name, sep, project_name = project.partition("/")
            if not sep or not bucket_name or not project_name:
                raise InvalidInput(f"project {project!r}: give 'BUCKET/NAME' or (bucket, name)")
        else:
            bucket_name, project_name = project
        if isinstance(pull, str):
            raise TypeError("pull must be a list of repository names, not one string")
        got = self._core.grant(
            bucket_name,
            project_name,
            repository,
            list(pull),
            _seconds(ttl),
            with_keys,
            allow_unscoped_registry,
            session_name,
            cancel,
        )
        entries = {e["key"]: Secret(e["value"]) if e["secret"] else e["value"] for e in got["entries"]}
        parts = tuple(GrantPart(**p) for p in got["parts"])
        return Grant(entries, got["expires_at"], got["registry_scope"], parts)

    def _check(self, raise_on_failure: bool, cancel: _Token) -> CheckReport:
        report = CheckReport(tuple(CheckItem(**item) for item in self._core.check(cancel)["items"]))
        if raise_on_failure and not report.ok:
            failed = "; ".join(f"{i.component}: {i.detail}" for i in report.failures())
            platform = self._core.status()[1]
            err = CheckFailed(f"check of platform `{platform}` failed: {failed}", "check_failed")
            err.report = report
            raise err
        return report

    def _plugins(self) -> List[PluginStatus]:
        # Only the fields this package knows: a newer library may report more.
        known = {f.name for f in dataclasses.fields(PluginStatus)}
        return [
            PluginStatus(**{k: v for k, v in {**row, "capabilities": tuple(row["capabilities"])}.items() if k in known})
            for row in self._core.plugins()
        ]


class Credentials(_Client):
    """Credentials of one platform (an instance of ``plugins.toml``).

    ``Credentials(platform=None, config=None)``: ``config`` is the
    configuration file (default ``$CREDHOST_CONFIG``, else
    ``./plugins.toml``); ``platform`` an instance name that overrides the
    file's ``platform`` and ``$CREDHOST_PLATFORM``. Only the file is read
    here (a bad one raises :class:`ConfigError` at once); the plugin is
    loaded on first use.

    One object serves every thread of the process, and keeps working in
    children forked from it (gunicorn, Celery prefork, ``multiprocessing``):
    each process builds its own runtime and provider before its first call.
    The GIL is released while a call waits for I/O, and Ctrl-C interrupts a
    call on the main thread (the transfer is cancelled and cleaned up).
    Pickled (multiprocessing's spawn method), the object travels as its
    arguments and the receiving process reads the file again.

    Registry credentials are cached until shortly before they expire.
    """

    def __init__(self, platform: Optional[str] = None, config: Optional[PathLike] = None) -> None:
        self._platform_arg = platform
        self._core = _credhost.Core(None if config is None else os.fspath(config), platform)

    def __repr__(self) -> str:
        return f"Credentials(platform={self.platform!r}, config={os.fspath(self.config_path)!r})"

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        # Pickled (multiprocessing's spawn and forkserver methods), an object
        # is its arguments: the receiving process reads the file again.
        return (type(self), (self._platform_arg, self.config_path))

    @property
    def platform(self) -> str:
        """The active instance's name."""
        return self._core.configured_platform

    def with_audit_label(self, label: str) -> "Credentials":
        """This object, sharing its providers, caches and (for
        :class:`LiveCredentials`) its watcher, with ``label`` (who asks and
        why, e.g. ``"deploy 1234 by alice"``) in the audit log's lines
        (``[audit]`` in ``plugins.toml``) of the calls made through it."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._core = self._core.labelled(str(label))
        return twin

    @property
    def config_path(self) -> str:
        """The configuration file (absolute)."""
        return os.fspath(self._core.config_path)

    def get_registry_token(self) -> Optional[Secret]:
        """The ``REGISTRY_TOKEN`` string build jobs push with (base64 of
        ``user:password``), or ``None`` when the registry needs no credentials."""
        return self._get_registry_token(None)

    def registry_auth(self, registry: Optional[str] = None, scope: Optional[str] = None) -> Optional[RegistryAuth]:
        """Registry credentials for ``registry`` (``host[:port]``; the
        platform's own registry when ``None``), optionally for a token
        ``scope`` such as ``repository:demo:pull,push``; ``None`` when the
        registry needs none. A registry goes to the instance of
        ``plugins.toml`` that serves it, as ``credhost token --registry``
        sends it (the active platform answers hosts no instance claims);
        when this object was made for a named ``platform``, that instance
        answers, as with ``credhost --platform``."""
        return self._registry_auth(registry, scope, None)

    def upload_project(
        self,
        project_name: str,
        project_obj: Any,
        *,
        verify: bool = True,
        progress: Optional[ProgressCallback] = None,
        overwrite: bool = True,
    ) -> TransferResult:
        """Stores a project archive in the projects bucket as ``project_name``.

        ``overwrite=False`` stores it only if no object of that name exists,
        checked by the store atomically: a name taken first raises
        :class:`AlreadyExists` and nothing is stored (a store that ignores
        the precondition is refused, unless the instance sets
        ``create_only = "best-effort"``).

        ``project_obj`` is ``bytes``/``bytearray``/``memoryview``, a path
        (``str`` or ``os.PathLike``: the file is checked to be a ZIP archive
        unless ``verify=False``, and may be read in parallel parts), or any
        binary file-like object with ``read(n)`` (a Django ``UploadedFile``,
        a request stream, an open file), read 1 MiB at a time: memory stays
        bounded whatever the size. An exception raised by ``read`` propagates
        unchanged, and nothing is stored.

        ``progress``, if given, is called as ``progress(done, total)`` (bytes
        sent so far; the size, or ``None`` while unknown) from the calling
        thread: at the start, about every 0.1 s while the count moves, and
        once more when the upload succeeded (then ``done == total``). An
        exception it raises while the upload runs stops it (nothing is
        stored) and propagates; one raised by that last call propagates too,
        the upload being complete.
        """
        return self._upload_project(project_name, project_obj, verify, None, progress, overwrite)

    def download_project(
        self,
        bucket_name: str,
        project_name: str,
        dest: Optional[PathLike] = None,
        *,
        force: bool = False,
        progress: Optional[ProgressCallback] = None,
    ) -> str:
        """Fetches ``bucket_name``/``project_name`` and returns the path written.

        ``dest=None`` writes into a new private temporary directory, under
        the name's last segment (the caller removes it); a directory
        (``"."`` for the current one) gets ``DIR/LAST_SEGMENT``; any other
        path is the file to write. The file appears only once complete and
        verified; an existing one is replaced only with ``force=True``
        (else :class:`AlreadyExists`).

        ``progress``: as for :meth:`upload_project`, with the bytes received;
        an exception it raises stops the download (no file is left) and
        propagates.
        """
        return self._download_project(bucket_name, project_name, dest, force, None, progress)

    def delete_project(self, bucket_name: str, project_name: str) -> None:
        """Deletes a project archive; deleting one that does not exist succeeds."""
        self._delete_project(bucket_name, project_name, None)

    def presign(
        self, method: str, bucket_name: Optional[str], project_name: str, expires: Expires = 3600
    ) -> Presigned:
        """A time-limited URL that ``GET``s ``bucket_name``/``project_name``,
        or that ``PUT``s an object ``project_name`` into the projects bucket
        (``bucket_name`` is then ignored and may be ``None``). ``expires``:
        seconds or a ``timedelta``, 1 s to 7 days. The URL is a :class:`Secret`."""
        return self._presign(method, bucket_name, project_name, expires, None)

    def get_credentials(self, *, project: Optional[Tuple[str, str]] = None, expires: Expires = 3600) -> Dict[str, str]:
        """The build job's environment entries, with the keys of
        ``credhost credentials`` (``PROJECTS_BUCKET``, ``REGISTRY``,
        ``REGISTRY_TOKEN``, the storage keys...). Secret values are
        :class:`Secret`. ``project=(bucket_name, project_name)`` adds
        ``PROJECT_URL``, a presigned URL reading that project for ``expires``."""
        return self._get_credentials(project, expires, None)

    def grant(
        self,
        project: Union[str, Tuple[str, str]],
        repository: Optional[str] = None,
        pull: Iterable[str] = (),
        ttl: Expires = 3600,
        with_keys: bool = False,
        *,
        allow_unscoped_registry: bool = False,
        session_name: Optional[str] = None,
    ) -> Grant:
        """What one build job needs and nothing more (``credhost grant``): a
        URL reading ``project`` (``'BUCKET/NAME'`` or ``(bucket, name)``), a
        registry credential pushing ``repository`` and pulling each of
        ``pull``, and with ``with_keys`` storage keys that only read the
        project; each narrowed by the platform, all expiring after ``ttl``
        (seconds or a ``timedelta``, 15 minutes to 12 hours). A part the
        platform cannot narrow raises :class:`InvalidInput` or
        :class:`ConfigError` naming what is missing, unless
        ``allow_unscoped_registry`` accepts a registry-wide credential."""
        return self._grant(
            project, repository, pull, ttl, with_keys, allow_unscoped_registry, session_name, None
        )

    def check(self, *, raise_on_failure: bool = True) -> CheckReport:
        """Probes storage (the bucket is there) and registry (reachable,
        credentials accepted). Raises :class:`CheckFailed` (with ``.report``)
        when a probe fails, unless ``raise_on_failure=False``."""
        return self._check(raise_on_failure, None)

    def plugins(self) -> List[PluginStatus]:
        """Every configured instance and how its plugin file fared (loading
        each), and the other plugin files of the plugin directory (listed,
        never loaded)."""
        return self._plugins()


class LiveCredentials(Credentials):
    """Like :class:`Credentials`, following edits of ``plugins.toml``.

    ``LiveCredentials(config=None, platform=None, interval=1.0)`` watches the
    file every ``interval`` seconds once first used (as the library's
    ``LiveHost``): a change is validated, the new platform's provider built
    and checked, and only then swapped in; a change that fails keeps the old
    provider serving and shows in :meth:`status`. Each call runs on the
    provider current when it starts. After a ``fork()`` the child starts a
    watcher of its own.
    """

    def __init__(
        self, config: Optional[PathLike] = None, platform: Optional[str] = None, interval: float = 1.0
    ) -> None:
        self._platform_arg = platform
        self._interval = float(interval)
        self._core = _credhost.Core(None if config is None else os.fspath(config), platform, True, self._interval)

    def __repr__(self) -> str:
        return f"LiveCredentials(config={self.config_path!r})"

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (type(self), (self.config_path, self._platform_arg, self._interval))

    @property
    def platform(self) -> str:
        """The platform being served now."""
        return self.status().platform

    def status(self) -> SwitchStatus:
        """What is being served, and why the latest change was rejected (if it was)."""
        generation, platform, last_error, process = self._core.status()
        return SwitchStatus(generation, platform, last_error, _process_state(process))

    def reload(self) -> bool:
        """Reads the file now and applies it if it changed (even contents
        rejected before): ``True`` when a new provider was swapped in. Raises
        why a change was rejected; the old provider keeps serving."""
        return self._core.reload()
