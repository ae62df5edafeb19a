"""Staging files: an upload streamed to disk before it is checked and stored under its key.

A :class:`StagingFile` is a temporary file in the storage's staging directory (for local storage
inside the storage root, so storing it is an atomic rename). Chunks are kept as they arrive (no
copy on the event loop) and written in batches of :data:`WRITE_BATCH` bytes by a worker thread
(one ``writev`` each) while the next batch is received, so the event loop never waits for the
disk and memory stays at about two batches per upload.

The file itself is created by the first write (or, for an empty upload, by the fsync), in that
thread too: creating a file waits for the file system's journal, which the fsyncs of other uploads
and outputs hold, and that wait was 0.3-1.6 ms on the event loop per upload (bench figure 3).

``complete()`` writes what is left and starts the one fsync in a thread without waiting for it:
the file's bytes can be checked (read from the page cache) while the disk flushes them.
:meth:`StagedFile.durable` waits for that fsync; a file is moved to its key only after it.
``finish()`` is both. ``discard()`` removes the file (idempotent), whatever happened before.

:func:`write_durable` is the blocking way to make one, for results a model process writes itself.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

WRITE_BATCH = 2 * 1024 * 1024
"""Bytes collected on the event loop before one write in a worker thread: a 10 MB upload takes
5 thread hand-offs instead of one per network chunk. At each hand-off the loop may wait for the
previous batch's write, and meanwhile it does not read the socket: with 1 MiB batches it waited
~1.0-1.3 ms per 8.5 MB upload and the body took ~1 ms longer to arrive than with 2 MiB ones
(bench/FINDINGS.md, eighth pass). At most two batches per upload are held in memory (one being
written, one collected)."""

FLUSH_EVERY = 2 * 1024 * 1024
"""Every this many bytes written, a flush of the file (``fdatasync``) is started in a thread of
its own, unless one is still running; writing and receiving go on meanwhile. The disk then
stores the file during the upload, and the fsync that makes it durable at the end has only the
last part left (an 8.5 MB file's fsync alone took 15-25 ms on the shared machine, even with its
pages already written out: the disk's flush is the cost; bench/FINDINGS.md, sixth pass). A
smaller file is flushed once, by that fsync."""

_IOV_MAX = 512  # buffers per writev (POSIX guarantees at least 16; Linux allows 1024)


@dataclass(frozen=True)
class StagedFile:
    """A complete staging file. ``name`` is the client's file name (never trusted). Its bytes are
    all written (readable); :meth:`durable` waits until they are also on disk (fsync'd)."""

    path: Path
    name: str | None
    size: int
    synced: asyncio.Future[None] | None = field(default=None, compare=False, repr=False)

    async def durable(self) -> None:
        """Wait for the file's fsync (raises its ``OSError`` if it failed)."""
        if self.synced is not None:
            await self.synced


@dataclass(frozen=True)
class SmallFile:
    """A complete upload small enough to stay in memory (:meth:`StagingFile.take_small`): no
    staging file was made for it, and it is stored with one write (``Storage.put``: write, fsync,
    rename in one worker thread) instead of a staging file's create, write, fsync and move."""

    name: str | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def _write_all(fd: int, buffers: list[bytes | memoryview]) -> None:
    """Write every buffer in order with as few ``writev`` calls as the kernel allows."""
    views = [memoryview(b) for b in buffers]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while written:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0


_flush_data = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # whoever cares awaits it; nobody else is told about a moot error


def _create(path: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:  # the staging folder is new (or was removed)
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)


class StagingFile:
    def __init__(self, directory: Path, name: str | None) -> None:
        self.name = name
        self.path = directory / f"upload-{secrets.token_hex(8)}"
        self.size = 0
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._written = 0  # bytes handed to the writer thread so far
        self._flushed = 0  # ... when the last flush was started
        self._writing: asyncio.Future[None] | None = None
        self._flushing: asyncio.Future[None] | None = None
        # A flush and the final fsync never overlap; a flush's error is the final fsync's (Linux
        # reports a write-back error to a file once: the fsync after it would not see it).
        self._flush_lock = threading.Lock()
        self._flush_error: OSError | None = None
        self._closed = False
        # Opened by the first thread that needs it (``_descriptor``); closed by the fsync after
        # complete(), else by discard().
        self._fd: int | None = None
        self._fd_lock = threading.Lock()
        self._discarded = False
        self._completed = False

    def _descriptor(self) -> int:
        """The file's descriptor, creating the file on first use (in a worker thread; one at a
        time: writes, flushes and the fsync follow each other). A file discarded before or
        while it is created does not stay: discard() never waits for a creation."""
        with self._fd_lock:
            if self._fd is not None:
                return self._fd
            if self._discarded:
                raise FileNotFoundError(errno.ENOENT, "the staging file was discarded", str(self.path))
        fd = _create(self.path)
        with self._fd_lock:
            if not self._discarded:
                self._fd = fd
                return fd
        os.close(fd)
        self.path.unlink(missing_ok=True)
        raise FileNotFoundError(errno.ENOENT, "the staging file was discarded", str(self.path))

    async def write(self, data: bytes | memoryview) -> None:
        """Queue ``data`` for writing. It is kept, not copied: it must not change afterwards
        (``bytes``, or a view of ``bytes``)."""
        if not data:
            return
        self.size += len(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= WRITE_BATCH:
            # One batch is written while the next one is received: waiting for each write would
            # stop reading the socket (the server reads no more than it is asked for) meanwhile.
            if self._writing is not None:
                await self._writing
                self._writing = None
                self._flush_behind()
            self._writing = self._write_pending()

    def _run(self, function: Callable[..., None], *args: object) -> asyncio.Future[None]:
        return asyncio.get_running_loop().run_in_executor(None, function, *args)

    def _write_pending(self) -> asyncio.Future[None]:
        self._written += self._pending_bytes
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        return self._run(self._write_batch, batch)

    def _create_empty(self) -> None:
        self._descriptor()

    def _write_batch(self, batch: list[bytes | memoryview]) -> None:
        _write_all(self._descriptor(), batch)

    def _flush_behind(self) -> None:
        """Start flushing what is written so far, if enough is and no flush is running."""
        if self._written - self._flushed < FLUSH_EVERY:
            return
        if self._flushing is not None and not self._flushing.done():
            return
        self._flushed = self._written
        self._flushing = self._run(self._flush)

    def _flush(self) -> None:
        with self._flush_lock:
            if self._closed:  # the final fsync ran first (and closed the descriptor)
                return
            try:
                _flush_data(self._descriptor())
            except OSError as exc:
                self._flush_error = exc

    def _sync_and_close(self) -> None:
        with self._flush_lock:  # after a flush still running
            self._closed = True
            fd = self._descriptor()
            try:
                if self._flush_error is not None:
                    raise self._flush_error
                os.fsync(fd)
            finally:
                self._close()

    def take_small(self, limit: int) -> SmallFile | None:
        """The whole upload as a :class:`SmallFile` when it is at most ``limit`` bytes and none of it
        has gone to the writer thread yet (then no file exists, and none is made: this staging file
        is done). None otherwise: :meth:`complete` it as usual."""
        if self.size > limit or self._written or self._writing is not None:
            return None
        data = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        with self._fd_lock:
            self._discarded = True
        return SmallFile(self.name, data)

    async def complete(self) -> StagedFile:
        """Write what is left; start the fsync (in a thread) and return without waiting for it."""
        if self._writing is not None:
            await self._writing
            self._writing = None
        if self._pending:
            self._writing = self._write_pending()
            await self._writing
            self._writing = None
        if self._written == 0:  # an empty upload: its (empty) file must exist, as the rest's do
            await self._run(self._create_empty)
        self._completed = True  # the fsync owns the descriptor now
        synced = self._run(self._sync_and_close)
        synced.add_done_callback(_retrieve)
        return StagedFile(path=self.path, name=self.name, size=self.size, synced=synced)

    async def finish(self) -> StagedFile:
        """A complete and durable (fsync'd) staging file."""
        staged = await self.complete()
        await staged.durable()
        return staged

    def _close(self, *_: object) -> None:
        with self._fd_lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def discard(self) -> None:
        """Remove the file now (a page-cache unlink: fine on the event loop) and close it, after a
        write or flush still running in its thread. After :meth:`complete` the fsync closes it."""
        with self._fd_lock:  # a write that has not created the file yet never will
            self._discarded = True
        self._pending, self._pending_bytes = [], 0
        running = [f for f in (self._writing, self._flushing) if f is not None and not f.done()]
        for done in (f for f in (self._writing, self._flushing) if f is not None and f.done()):
            _retrieve(done)  # an error here is moot, the file goes away
        self._writing = self._flushing = None
        self.path.unlink(missing_ok=True)  # the name only: a thread may still use the descriptor
        if self._completed:  # the fsync closes it
            return
        if running:
            asyncio.gather(*running, return_exceptions=True).add_done_callback(self._close)
        else:
            self._close()


def write_durable(directory: Path, data: bytes | memoryview, *, prefix: str = "output") -> Path:
    """A new staging file in ``directory`` holding ``data``, written and fsync'd: ready for
    ``Storage.put_file``. Blocking (for a worker thread or process). Nothing is left behind when
    it fails."""
    path = directory / f"{prefix}-{secrets.token_hex(8)}"
    fd = _create(path)
    try:
        _write_all(fd, [data])
        os.fsync(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def sweep(directory: Path, *, older_than: float, now: float | None = None) -> list[Path]:
    """Remove staging files last written more than ``older_than`` seconds ago: what a process
    killed in the middle of an upload, or between a model process's result and its storing, left
    behind. Returns the removed paths."""
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
