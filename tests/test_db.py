"""The SQLite write path: one writer connection per process, writers queue without failing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from darkroom.db import Database


async def test_concurrent_sqlite_writers_queue_and_all_commit(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE t (n INTEGER NOT NULL)"))
        assert db.write_engine is not db.engine
        active = 0
        most = 0

        async def writer(n: int) -> None:
            nonlocal active, most
            async with db.transaction() as s:
                await s.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
                active += 1
                most = max(most, active)
                await asyncio.sleep(0)  # let the others try to write meanwhile
                active -= 1

        await asyncio.gather(*(writer(n) for n in range(40)))
        # reads are not serialised behind a writer: a read session opens while a write is open
        async with db.transaction() as w:
            await w.execute(text("INSERT INTO t (n) VALUES (-1)"))
            async with db.transaction(write=False) as r:
                seen = await r.scalar(text("SELECT count(*) FROM t"))
        async with db.transaction(write=False) as r:
            total = await r.scalar(text("SELECT count(*) FROM t"))
    finally:
        await db.dispose()
    assert most == 1  # one write transaction at a time within the process
    assert seen == 40  # the reader saw the committed rows, not the open write
    assert total == 41
