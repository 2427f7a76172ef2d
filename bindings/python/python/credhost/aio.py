"""The operations of :mod:`credhost` as awaitables, for asyncio code.

Each call runs the blocking operation in a worker thread
(``asyncio.to_thread``), with the GIL released while it waits for I/O, so
the event loop keeps running. Cancelling the awaiting task cancels the
operation itself: the plugin's transfer is stopped and cleaned up (no
partial object, nothing at the destination) before ``CancelledError``
propagates.

Construction only reads the configuration file, like the synchronous
classes; file-like objects given to :meth:`Credentials.upload_project` are
read (``read(n)``) from a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

from . import _client, _credhost
from ._types import CheckReport, Grant, PluginStatus, Presigned, RegistryAuth, Secret, SwitchStatus, TransferResult

__all__ = ["Credentials", "LiveCredentials"]

T = TypeVar("T")


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """Runs ``fn(*args, cancel_token)`` in a thread; a cancelled caller
    cancels the operation and waits for it to wind down."""
    token = _credhost.CancelToken()
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, token))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        token.cancel()
        with contextlib.suppress(BaseException):
            await work
        raise


class Credentials:
    """:class:`credhost.Credentials` with awaitable operations.

    ``Credentials(platform=None, config=None)`` as for the synchronous class;
    :meth:`from_sync` wraps an existing one (both then share its provider and
    token cache).
    """

    _sync: _client.Credentials

    def __init__(self, platform: Optional[str] = None, config: Optional[_client.PathLike] = None) -> None:
        self._sync = _client.Credentials(platform, config)

    def with_audit_label(self, label: str) -> "Credentials":
        """See :meth:`credhost.Credentials.with_audit_label`."""
        return type(self).from_sync(self._sync.with_audit_label(label))

    @classmethod
    def from_sync(cls, sync: _client.Credentials) -> "Credentials":
        """Wraps a synchronous :class:`credhost.Credentials` (or ``LiveCredentials``)."""
        obj = cls.__new__(cls)
        obj._sync = sync
        return obj

    def __repr__(self) -> str:
        return f"aio.{self._sync!r}"

    @property
    def sync(self) -> _client.Credentials:
        """The synchronous object underneath."""
        return self._sync

    @property
    def platform(self) -> str:
        """The active instance's name (for a live object, reading it may block briefly)."""
        return self._sync.platform

    async def get_registry_token(self) -> Optional[Secret]:
        """See :meth:`credhost.Credentials.get_registry_token`."""
        return await _call(self._sync._get_registry_token)

    async def registry_auth(self, registry: Optional[str] = None, scope: Optional[str] = None) -> Optional[RegistryAuth]:
        """See :meth:`credhost.Credentials.registry_auth`."""
        return await _call(self._sync._registry_auth, registry, scope)

    async def upload_project(
        self,
        project_name: str,
        project_obj: Any,
        *,
        verify: bool = True,
        progress: Optional[_client.ProgressCallback] = None,
        overwrite: bool = True,
    ) -> TransferResult:
        """See :meth:`credhost.Credentials.upload_project`. ``progress`` is
        called from the worker thread running the upload, not from the event
        loop: hand results to the loop with ``loop.call_soon_threadsafe``."""
        upload = functools.partial(self._sync._upload_project, progress=progress, overwrite=overwrite)
        return await _call(upload, project_name, project_obj, verify)

    async def download_project(
        self,
        bucket_name: str,
        project_name: str,
        dest: Optional[_client.PathLike] = None,
        *,
        force: bool = False,
        progress: Optional[_client.ProgressCallback] = None,
    ) -> str:
        """See :meth:`credhost.Credentials.download_project`; ``progress`` as
        for :meth:`upload_project`."""
        download = functools.partial(self._sync._download_project, progress=progress)
        return await _call(download, bucket_name, project_name, dest, force)

    async def delete_project(self, bucket_name: str, project_name: str) -> None:
        """See :meth:`credhost.Credentials.delete_project`."""
        await _call(self._sync._delete_project, bucket_name, project_name)

    async def presign(
        self, method: str, bucket_name: Optional[str], project_name: str, expires: _client.Expires = 3600
    ) -> Presigned:
        """See :meth:`credhost.Credentials.presign`."""
        return await _call(self._sync._presign, method, bucket_name, project_name, expires)

    async def get_credentials(
        self, *, project: Optional[Tuple[str, str]] = None, expires: _client.Expires = 3600
    ) -> Dict[str, str]:
        """See :meth:`credhost.Credentials.get_credentials`."""
        return await _call(self._sync._get_credentials, project, expires)

    async def grant(
        self,
        project: Union[str, Tuple[str, str]],
        repository: Optional[str] = None,
        pull: Iterable[str] = (),
        ttl: _client.Expires = 3600,
        with_keys: bool = False,
        *,
        allow_unscoped_registry: bool = False,
        session_name: Optional[str] = None,
    ) -> Grant:
        """See :meth:`credhost.Credentials.grant`."""
        return await _call(
            self._sync._grant, project, repository, pull, ttl, with_keys, allow_unscoped_registry, session_name
        )

    async def check(self, *, raise_on_failure: bool = True) -> CheckReport:
        """See :meth:`credhost.Credentials.check`."""
        return await _call(self._sync._check, raise_on_failure)

    async def plugins(self) -> List[PluginStatus]:
        """See :meth:`credhost.Credentials.plugins`."""
        return await asyncio.to_thread(self._sync._plugins)


class LiveCredentials(Credentials):
    """:class:`credhost.LiveCredentials` with awaitable operations."""

    _sync: _client.LiveCredentials

    def __init__(
        self, config: Optional[_client.PathLike] = None, platform: Optional[str] = None, interval: float = 1.0
    ) -> None:
        self._sync = _client.LiveCredentials(config, platform, interval)

    async def status(self) -> SwitchStatus:
        """See :meth:`credhost.LiveCredentials.status`."""
        return await asyncio.to_thread(self._sync.status)

    async def reload(self) -> bool:
        """See :meth:`credhost.LiveCredentials.reload`."""
        return await asyncio.to_thread(self._sync.reload)
