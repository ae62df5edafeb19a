from __future__ import annotations

from typing import Protocol


class StorageError(Exception):
    """The storage backend failed (disk full, bucket unreachable…)."""


class ObjectNotFound(StorageError):
    pass


class Storage(Protocol):
    name: str

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...

    def url(self, key: str, *, expires_in: int, download_name: str | None = None) -> str:
        """A URL the holder can GET until it expires (signed; never a public guessable path)."""
        ...

    async def check(self) -> None:
        """Raise StorageError when the backend is not usable (for /readyz)."""
        ...
