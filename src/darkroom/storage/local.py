"""Local-disk storage under the data dir, served by our own signed-URL endpoint."""

from __future__ import annotations

import asyncio
import errno
import mimetypes
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, quote_plus, urlencode

from darkroom.storage.base import ObjectInfo, ObjectNotFound, PresignedPut, StorageError
from darkroom.storage.keys import is_valid_key
from darkroom.storage.signing import UrlSigner

# Objects up to this size are read on the event loop: a page-cache read of a few KB takes
# microseconds, less than handing the read to a thread and waiting for a turn of a busy loop to
# get the bytes back (a task's small input is read between its claim and the provider's run()).
INLINE_READ_BYTES = 64 * 1024


def upload_claim(key: str, content_type: str, size: int) -> str:
    """What a direct-upload signature covers. Keys never contain a newline, so a PUT signature
    can never pass as the signature of a GET link for the same key."""
    return f"PUT\n{key}\n{content_type}\n{size}"


def _in_folder(path: Path) -> BinaryIO:
    """``open(path, "wb")``, creating the folder when it is missing: the folder exists for all but
    the first object of a month, and a ``mkdir`` that finds it costs a system call per write."""
    try:
        return open(path, "wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")


def _write_atomically(path: Path, fill: Callable[[BinaryIO], object], verb: str) -> None:
    """``fill`` a temporary file next to ``path``, fsync it and rename it into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with _in_folder(tmp) as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot {verb} {path.name}: {exc}") from exc


class LocalStorage:
    name = "local"

    def __init__(self, root: Path, signer: UrlSigner, *, url_prefix: str = "/files") -> None:
        self.root = root.resolve()
        self.signer = signer
        self.url_prefix = url_prefix.rstrip("/")
        # Inside the root (one file system: storing is a rename), outside the keys' folders.
        self.staging_dir = self.root / "staging"

    def path_of(self, key: str) -> Path:
        """The key's file. A valid key is relative, without ``..`` and without dots in its folders
        (``keys.KEY_PATTERN``), so it names a file under the root by its text alone; symlinks are
        not resolved, so an operator may put a folder (``outputs`` on another disk, say) behind one.
        (Resolving also cost ~40 ``lstat`` calls per task on the event loop; bench figure 3.)"""
        if not is_valid_key(key):
            raise ObjectNotFound(f"invalid key: {key!r}")
        return self.root / key

    def _write(self, path: Path, data: bytes) -> None:
        _write_atomically(path, lambda fh: fh.write(data), "write")

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self.path_of(key), data)

    def _move(self, source: Path, path: Path) -> None:
        try:
            try:
                source.replace(path)  # atomic; the data was fsync'd when the staging file was finished
            except FileNotFoundError:  # the key's month folder is new (or the source is gone)
                path.parent.mkdir(parents=True, exist_ok=True)
                source.replace(path)
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # the key's folder is a symlink to another file system
                self._copy_across(source, path)
                return
            source.unlink(missing_ok=True)
            raise StorageError(f"cannot store {path.name}: {exc}") from exc

    def _copy_across(self, source: Path, path: Path) -> None:
        """A copy renamed into place on the target's file system, then the source removed."""
        try:
            with open(source, "rb") as src:
                _write_atomically(path, lambda fh: shutil.copyfileobj(src, fh, 1024 * 1024), "store")
        finally:
            source.unlink(missing_ok=True)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        await asyncio.to_thread(self._move, path, self.path_of(key))

    async def get(self, key: str) -> bytes:
        path = self.path_of(key)
        try:
            if path.stat().st_size <= INLINE_READ_BYTES:
                return path.read_bytes()
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def local_path(self, key: str) -> Path | None:
        return self.path_of(key)

    async def delete(self, key: str) -> None:
        path = self.path_of(key)
        await asyncio.to_thread(path.unlink, True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_of(key).is_file)

    def url(self, key: str, *, expires_in: int, download_name: str | None = None) -> str:
        expires, sig = self.signer.sign(key, expires_in)
        query = f"expires={expires}&sig={sig}"  # digits and hex: urlencode's output, without its cost
        if download_name:
            query += "&download=" + quote_plus(download_name)
        return f"{self.url_prefix}/{quote(key)}?{query}"

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self.path_of(key)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None
        return ObjectInfo(size=size, content_type=mimetypes.guess_type(path.name)[0])

    def presign_put(self, key: str, *, content_type: str, size: int, expires_in: int) -> PresignedPut:
        """A signed PUT to our own endpoint (storage/endpoints.py), bound to type and length."""
        expires, sig = self.signer.sign(upload_claim(key, content_type, size), expires_in)
        query = {"expires": str(expires), "sig": sig, "contentType": content_type, "size": str(size)}
        return PresignedPut(
            url=f"{self.url_prefix}/{quote(key)}?{urlencode(query)}", headers={"Content-Type": content_type}
        )

    async def list_keys(self, prefix: str, *, start_after: str = "", limit: int = 1000) -> list[str]:
        if prefix.startswith("/") or ".." in prefix:  # ours (the orphan sweep); never outside the root
            return []
        directory = self.root / prefix

        def names() -> list[str]:
            try:
                entries = os.listdir(directory)
            except (FileNotFoundError, NotADirectoryError):
                return []
            keys = (prefix + name for name in entries if not name.startswith("."))  # no temp files
            return sorted(k for k in keys if k > start_after and is_valid_key(k))[:limit]

        return await asyncio.to_thread(names)

    async def check(self) -> None:
        def probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise StorageError(f"{self.root} is not writable")

        await asyncio.to_thread(probe)
