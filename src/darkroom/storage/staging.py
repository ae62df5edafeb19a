"""Staging files: an upload streamed to disk before it is checked and stored under its key.

A :class:`StagingFile` is a temporary file in the storage's staging directory (for local storage
inside the storage root, so storing it is an atomic rename). Chunks are written as they arrive,
in batches of :data:`WRITE_BATCH` bytes handed to a worker thread while the next batch is
received, so the event loop never waits for the disk and memory stays at two batches per upload.
``finish()`` fsyncs once; ``discard()`` removes the file (idempotent), whatever happened before.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

WRITE_BATCH = 1024 * 1024
"""Bytes collected on the event loop before one write in a worker thread: a 10 MB upload
takes ~10 thread hand-offs instead of one per 64 KiB network chunk."""


@dataclass(frozen=True)
class StagedFile:
    """A complete, fsync'd staging file. ``name`` is the client's file name (never trusted)."""

    path: Path
    name: str | None
    size: int


class StagingFile:
    def __init__(self, directory: Path, name: str | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.path = directory / f"upload-{secrets.token_hex(8)}"
        self.size = 0
        self._pending = bytearray()
        self._writing: asyncio.Future[None] | None = None
        self._file: BinaryIO | None = open(self.path, "xb")  # noqa: SIM115 - closed by finish/discard

    def _write(self, data: bytes | bytearray) -> None:
        assert self._file is not None
        self._file.write(data)

    async def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._pending += data
        if len(self._pending) >= WRITE_BATCH:
            # One batch is written while the next one is received: waiting for each write would
            # stop reading the socket (the server reads no more than it is asked for) meanwhile.
            if self._writing is not None:
                await self._writing
            batch, self._pending = self._pending, bytearray()
            self._writing = asyncio.get_running_loop().run_in_executor(None, self._write, batch)

    def _finish(self) -> None:
        assert self._file is not None
        if self._pending:
            self._write(self._pending)
            self._pending = bytearray()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    async def finish(self) -> StagedFile:
        if self._writing is not None:
            await self._writing
            self._writing = None
        await asyncio.to_thread(self._finish)
        return StagedFile(path=self.path, name=self.name, size=self.size)

    def _close_and_remove(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)

    def _after_write(self, writing: asyncio.Future[None]) -> None:
        if not writing.cancelled():
            writing.exception()  # retrieved: an error here is moot, the file goes away
        self._close_and_remove()

    def discard(self) -> None:
        """Close and remove the file (a page-cache unlink: fine on the event loop); a write still
        running in its thread is let finish first."""
        self._pending = bytearray()
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.add_done_callback(self._after_write)
            return
        if writing is not None:
            self._after_write(writing)
        else:
            self._close_and_remove()


def sweep(directory: Path, *, older_than: float, now: float | None = None) -> list[Path]:
    """Remove staging files last written more than ``older_than`` seconds ago: what a process
    killed in the middle of an upload left behind. Returns the removed paths."""
    cutoff = (time.time() if now is None else now) - older_than
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # finished (moved away) or removed meanwhile
            continue
    return removed
