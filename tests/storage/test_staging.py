"""Staging files (storage/staging.py): chunks kept as views and written in batches, a flush of the
file started while it is still being written, and an fsync that ``complete()`` starts but does not
wait for. Whatever the order of events, the bytes on disk are the bytes sent, a flush's error is
not lost, and nothing is left behind by ``discard()``."""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import threading
from pathlib import Path

import pytest

from darkroom.storage import staging
from darkroom.storage.staging import FLUSH_EVERY, StagingFile


async def _write(file: StagingFile, data: bytes, chunk: int = 65536) -> None:
    view = memoryview(data)
    for offset in range(0, len(data), chunk):
        await file.write(view[offset : offset + chunk])


@pytest.mark.parametrize("chunk", [1, 4093, 65536, 3 * 2**20])
async def test_the_file_holds_exactly_the_bytes_sent(tmp_path: Path, chunk: int) -> None:
    """Views of the received chunks are kept (not copied) and written with writev in batches."""
    data = secrets.token_bytes(3 * 2**20 + 12345 if chunk > 1 else 70_000)
    file = StagingFile(tmp_path, "a.jpg")
    await _write(file, data, chunk)
    await file.write(b"")  # nothing, and not a batch of its own
    staged = await file.finish()
    assert staged.size == len(data) and staged.name == "a.jpg"
    assert staged.path.read_bytes() == data


async def test_a_large_file_is_flushed_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync at the end then has only the last part of the file left to flush."""
    flushed: list[int] = []
    monkeypatch.setattr(staging, "_flush_data", lambda fd: flushed.append(os.fstat(fd).st_size))
    file = StagingFile(tmp_path, None)
    await _write(file, secrets.token_bytes(3 * FLUSH_EVERY))
    staged = await file.finish()  # after the flushes: they and the fsync never overlap
    assert flushed and all(size >= FLUSH_EVERY for size in flushed), flushed
    assert staged.size == 3 * FLUSH_EVERY

    small: list[int] = []
    monkeypatch.setattr(staging, "_flush_data", lambda fd: small.append(fd))
    file = StagingFile(tmp_path, None)
    await _write(file, secrets.token_bytes(FLUSH_EVERY // 2))
    await file.finish()
    assert small == []  # a small file is flushed once, by the final fsync


async def test_a_failed_flush_fails_the_final_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux reports a write-back error to a file once: the fsync after a failed flush would pass."""

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "injected write-back error")

    monkeypatch.setattr(staging, "_flush_data", fail)
    file = StagingFile(tmp_path, None)
    await _write(file, secrets.token_bytes(2 * FLUSH_EVERY + 65536))
    staged = await file.complete()
    with pytest.raises(OSError, match="injected"):
        await staged.durable()
    file.discard()
    assert not staged.path.exists()


async def test_complete_returns_before_the_fsync_and_durable_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes are readable (to be checked) while the fsync runs; durable() is the fsync."""
    release = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(staging.os, "fsync", slow_fsync)
    data = secrets.token_bytes(2 * 2**20 + 7)
    file = StagingFile(tmp_path, None)
    await _write(file, data)
    staged = await file.complete()
    assert staged.path.read_bytes() == data
    durable = asyncio.ensure_future(staged.durable())
    await asyncio.sleep(0.05)
    assert not durable.done()
    release.set()
    await asyncio.wait_for(durable, 10)


async def test_discard_during_a_flush_removes_the_file_and_closes_it_after_the_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started = threading.Event()
    seen: list[object] = []

    def slow_flush(fd: int) -> None:
        started.set()
        release.wait(10)
        try:
            seen.append(os.fstat(fd).st_size)  # still open: discard() waits for the flush to end
        except OSError as exc:
            seen.append(exc)

    monkeypatch.setattr(staging, "_flush_data", slow_flush)
    file = StagingFile(tmp_path, None)
    await _write(file, secrets.token_bytes(3 * FLUSH_EVERY))
    assert await asyncio.to_thread(started.wait, 10)
    file.discard()
    assert list(tmp_path.iterdir()) == []  # the name goes at once; the descriptor after the flush
    release.set()
    for _ in range(200):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert len(seen) == 1 and isinstance(seen[0], int), seen


async def test_the_file_is_created_in_a_worker_thread_and_not_kept_after_a_discard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a file waits for the file system's journal (other uploads' fsyncs hold it), so
    the constructor, on the event loop, creates nothing: the first write's thread does. A discard
    that lands while that creation is under way leaves nothing behind, and does not wait for it."""
    folder = tmp_path / "staging"
    empty = StagingFile(folder, None)
    assert not folder.exists()  # no mkdir, no open on the event loop
    staged = await empty.finish()  # an empty upload's file exists once complete
    assert staged.path.read_bytes() == b""

    creating = threading.Event()
    release = threading.Event()
    real_create = staging._create

    def slow_create(path: Path) -> int:
        creating.set()
        release.wait(10)
        return real_create(path)

    monkeypatch.setattr(staging, "_create", slow_create)
    file = StagingFile(folder, None)
    await file.write(secrets.token_bytes(staging.WRITE_BATCH))  # the first batch goes to a thread
    assert await asyncio.to_thread(creating.wait, 10)
    writing = file._writing
    assert writing is not None
    file.discard()  # returns at once, while the thread is still creating the file
    release.set()
    await asyncio.gather(writing, return_exceptions=True)  # the write is over: created, then removed
    assert [p.name for p in folder.iterdir()] == [staged.path.name]


async def test_a_large_upload_is_handed_to_the_writer_thread_in_few_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hand-off may make the loop wait for the previous write (and stop reading the socket):
    an 8.5 MB upload received in 64 KiB chunks is written in 5 batches (bench figure 4), none
    larger than two batches' worth of chunks (what is held in memory)."""
    batches: list[int] = []
    write_batch = StagingFile._write_batch

    def counted(self: StagingFile, batch: list[bytes | memoryview]) -> None:
        batches.append(sum(len(b) for b in batch))
        write_batch(self, batch)

    monkeypatch.setattr(StagingFile, "_write_batch", counted)
    data = secrets.token_bytes(8_500_000)
    file = StagingFile(tmp_path, "big.jpg")
    await _write(file, data)
    staged = await file.finish()
    assert staged.path.read_bytes() == data
    assert len(batches) == 5 and sum(batches) == len(data)
    assert max(batches) < 2 * staging.WRITE_BATCH


def test_write_durable_makes_a_complete_fsynced_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a model process uses to hand over its result: the bytes, fsync'd, in a new file (the
    staging folder is made when it is missing)."""
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    data = secrets.token_bytes(3 * 65536 + 7)
    path = staging.write_durable(tmp_path / "staging", data)
    assert path.parent == tmp_path / "staging"
    assert path.read_bytes() == data
    assert synced == [len(data)]
    assert staging.write_durable(tmp_path / "staging", data) != path  # a new name each time


def test_write_durable_leaves_nothing_when_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "injected fsync error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="injected"):
        staging.write_durable(tmp_path, b"result")
    assert list(tmp_path.iterdir()) == []
