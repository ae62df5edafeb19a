"""WAL checkpoints run off the event loop (sqlite_checkpoint.py) and keep the WAL bounded."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import text

from darkroom.db import Database

PAGE = 4096
BLOB = os.urandom(3 * PAGE)  # random: each row adds about three pages to the WAL


def _wal_pages(path: Path) -> int:
    wal = Path(str(path) + "-wal")
    return wal.stat().st_size // PAGE if wal.exists() else 0


async def _write(db: Database, rows: int) -> None:
    for _ in range(rows):
        async with db.transaction() as s:
            await s.execute(text("INSERT INTO t (b) VALUES (:b)"), {"b": BLOB})


async def _setup(path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}")
    async with db.transaction() as s:
        await s.execute(text("CREATE TABLE t (b BLOB NOT NULL)"))
    return db


async def test_commits_never_checkpoint_and_each_checkpoint_lets_the_wal_start_over(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    db = await _setup(path)
    assert db.checkpointer is not None
    db.checkpointer.stop()  # driven by hand below
    try:
        async with db.transaction(write=False) as s:
            assert await s.scalar(text("PRAGMA wal_autocheckpoint")) == 0
        await _write(db, 500)  # ~2,500 pages: past SQLite's automatic checkpoint at 1,000
        high = _wal_pages(path)
        assert high > 1500  # no commit checkpointed (and reset) the WAL

        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            sizes = []
            for _ in range(6):  # without checkpoints the WAL would grow to ~3 × ``high``
                db.checkpointer.step(conn)  # changed since the last look: PASSIVE
                await _write(db, 250)
                sizes.append(_wal_pages(path))
            assert max(sizes) <= high, sizes  # reused from its start after each checkpoint, not grown
            db.checkpointer.step(conn)  # changed: PASSIVE
            db.checkpointer.step(conn)  # idle since: TRUNCATE
            assert _wal_pages(path) == 0 and db.checkpointer.truncated == 1
            assert db.checkpointer.passive == 7
        finally:
            conn.close()
        async with db.transaction(write=False) as s:
            assert await s.scalar(text("SELECT count(*) FROM t")) == 500 + 6 * 250
    finally:
        await db.dispose()


async def test_the_background_checkpointer_empties_the_wal_after_writes(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    db = await _setup(path)
    assert db.checkpointer is not None
    try:
        await _write(db, 400)
        deadline = time.monotonic() + 60  # a loaded machine may delay the thread; not a speed test
        # the WAL file is empty as soon as SQLite truncates it, a moment before the thread counts
        # the checkpoint: wait for both
        while (_wal_pages(path) or db.checkpointer.truncated < 1) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert _wal_pages(path) == 0
        assert db.checkpointer.passive >= 1 and db.checkpointer.truncated >= 1
        async with db.transaction(write=False) as s:
            assert await s.scalar(text("SELECT count(*) FROM t")) == 400
    finally:
        await db.dispose()
    assert not db.checkpointer._thread.is_alive()


async def test_the_wal_starts_over_while_writes_go_on(tmp_path: Path) -> None:
    # a PASSIVE checkpoint that runs beside the writers never finds every frame copied, and only
    # after one that does may SQLite write from the WAL's start again: under a steady write load the
    # WAL grew as long as the load lasted (bench figure 3: 311 MB in 7 s)
    path = tmp_path / "steady.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    checkpointer = db.checkpointer
    assert checkpointer is not None
    checkpointer.interval = 0.01  # before the first write starts its thread
    checkpointer.restart_bytes = 64 * PAGE
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE t (b BLOB NOT NULL)"))
        high = 0
        for _ in range(40):  # ~6,000 pages in all, back to back, while the thread looks every 10 ms
            await _write(db, 50)
            high = max(high, _wal_pages(path))
        assert high < 2000, high
        assert checkpointer.restarted >= 1
        async with db.transaction(write=False) as s:
            assert await s.scalar(text("SELECT count(*) FROM t")) == 40 * 50
    finally:
        await db.dispose()
