from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class StorageError(Exception):
    """The storage backend failed (disk full, bucket unreachable…)."""


class ObjectNotFound(StorageError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None


@dataclass(frozen=True)
class PresignedPut:
    """Where and how a client uploads one object directly: ``PUT url`` with exactly these headers
    and the announced number of bytes (the signature covers content type and length)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)


class Storage(Protocol):
    name: str
    staging_dir: Path
    """Where uploads are streamed before they are stored (``storage/staging.py``); for local
    storage on the same file system as the objects, so :meth:`put_file` is a rename."""

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the complete, fsync'd file at ``path`` (in ``staging_dir``) under ``key``.
        The file is consumed: moved into place, or uploaded and then removed."""
        ...

    async def get(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """The object's file on this machine (local-disk storage), or None (S3). Objects are
        never rewritten in place, so the file holds what :meth:`get` returns."""
        ...

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...

    def url(self, key: str, *, expires_in: int, download_name: str | None = None) -> str:
        """A URL the holder can GET until it expires (signed; never a public guessable path)."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and stored content type, or None when the object does not exist."""
        ...

    def presign_put(self, key: str, *, content_type: str, size: int, expires_in: int) -> PresignedPut:
        """A URL the holder can PUT exactly ``size`` bytes of ``content_type`` to, until it expires."""
        ...

    async def check(self) -> None:
        """Raise StorageError when the backend is not usable (for /readyz)."""
        ...

    async def list_keys(self, prefix: str, *, start_after: str = "", limit: int = 1000) -> list[str]:
        """Up to ``limit`` keys under ``prefix`` (a ``folder/yyyy/mm/`` directory) in ascending
        order, all greater than ``start_after``; fewer than ``limit`` means the end."""
        ...
