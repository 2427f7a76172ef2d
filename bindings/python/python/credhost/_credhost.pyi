"""The native part of credhost (internal: use :mod:`credhost`)."""

from os import PathLike
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

__version__: str

#: The library's answers, as dicts of its fields (secrets in clear; the
#: public classes wrap them).
_Transfer = Dict[str, Any]
_Progress = Callable[[int, Optional[int]], Any]

class CancelToken:
    """A cancellation signal for one call, set from another thread."""

    def __init__(self) -> None: ...
    def cancel(self) -> None:
        """Asks the call using this token to stop; it raises ``Cancelled``."""
    @property
    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called."""

class Core:
    """One configuration and, per process, its provider or live host."""

    def __init__(
        self,
        config: Optional[Union[str, PathLike[str]]] = None,
        platform: Optional[str] = None,
        live: bool = False,
        interval: float = 1.0,
    ) -> None: ...
    def labelled(self, label: Optional[str]) -> "Core": ...
    @property
    def config_path(self) -> Path: ...
    @property
    def configured_platform(self) -> str: ...
    def registry_auth(
        self, registry: Optional[str] = None, scope: Optional[str] = None, cancel: Optional[CancelToken] = None
    ) -> Optional[Dict[str, Any]]: ...
    def upload_path(
        self,
        path: Union[str, PathLike[str]],
        name: str,
        verify: bool = True,
        cancel: Optional[CancelToken] = None,
        progress: Optional[_Progress] = None,
        if_absent: bool = False,
    ) -> _Transfer: ...
    def upload_stream(
        self,
        file: Any,
        name: str,
        size_hint: Optional[int] = None,
        cancel: Optional[CancelToken] = None,
        progress: Optional[_Progress] = None,
        if_absent: bool = False,
    ) -> _Transfer: ...
    def download(
        self,
        bucket: str,
        name: str,
        dest: Union[str, PathLike[str]],
        force: bool = False,
        cancel: Optional[CancelToken] = None,
        progress: Optional[_Progress] = None,
    ) -> _Transfer: ...
    def credentials(self, cancel: Optional[CancelToken] = None) -> List[Dict[str, Any]]: ...
    def check(self, cancel: Optional[CancelToken] = None) -> Dict[str, Any]: ...
    def presign(
        self, method: str, bucket: str, name: str, expires: float, cancel: Optional[CancelToken] = None
    ) -> Dict[str, Any]: ...
    def delete(self, bucket: str, name: str, cancel: Optional[CancelToken] = None) -> None: ...
    def grant(
        self,
        bucket: str,
        name: str,
        repository: Optional[str] = None,
        pull: List[str] = ...,
        ttl: float = 3600.0,
        with_keys: bool = False,
        allow_unscoped_registry: bool = False,
        session_name: Optional[str] = None,
        cancel: Optional[CancelToken] = None,
    ) -> Dict[str, Any]: ...
    def plugins(self) -> List[Dict[str, Any]]: ...
    def status(self) -> Tuple[int, str, Optional[str], Optional[Dict[str, Any]]]: ...
    def reload(self) -> bool: ...
    @staticmethod
    def validate_name(name: str) -> None: ...
    def is_started(self) -> bool: ...

def _set_plugin_runner(program: str, args: List[str]) -> None: ...
def _reopen_audit_log() -> None: ...
def _plugin_runner_main() -> int: ...
