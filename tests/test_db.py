"""The SQLite write path: one writer connection per process, writers queue without failing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from darkroom.db import Database
from tests import database


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


async def test_a_single_read_on_sqlite_sends_no_begin_and_sees_committed_rows(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    sent: list[str] = []
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE t (n INTEGER NOT NULL)"))
            await s.execute(text("INSERT INTO t (n) VALUES (1)"))
        assert db.single_read_engine is not db.engine

        @event.listens_for(db.single_read_engine.sync_engine, "before_cursor_execute")
        def _sent(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            sent.append(statement)

        async with db.transaction() as w:  # an open write is not seen, and does not block the read
            await w.execute(text("INSERT INTO t (n) VALUES (2)"))
            async with db.single_read() as conn:
                seen = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
        async with db.single_read() as conn:
            after = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
    finally:
        await db.dispose()
    assert (seen, after) == (1, 2)
    assert sent == ["SELECT count(*) FROM t"] * 2  # no BEGIN, and no transaction left open


async def _backend_pid(db: Database) -> int:
    async with db.transaction(write=False) as s:
        return int(await s.scalar(text("SELECT pg_backend_pid()")))


async def _terminate(db: Database, pid: int) -> None:
    async with db.transaction() as s:  # another pooled connection does it
        await s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def test_postgres_pooled_connections_closed_by_the_server_are_replaced_unseen() -> None:
    """Without pool_pre_ping: a connection the server closed is replaced at checkout, whether it
    was used a moment ago or has been idle past the ping interval (asyncpg saw the socket close;
    the ping of idle connections is for a close that never reached the client, not made here).
    Without the checkout check the first use after the kill fails with 'connection is closed'."""
    url = database.create_database()
    db = Database(url, ping_idle_after=0.3)
    try:
        # a pool of connections, one of them ours to kill
        async with db.transaction(write=False) as s, db.transaction(write=False) as s2:
            victim = int(await s.scalar(text("SELECT pg_backend_pid()")))
            await s2.scalar(text("SELECT 1"))

        for idle in (0.0, 0.5):  # used just now; idle past ping_idle_after
            await _terminate(db, victim)
            await asyncio.sleep(0.05 + idle)  # the close reaches the client
            for _ in range(3):  # every pooled connection answers (no error reaches the caller)
                victim = await _backend_pid(db)
        async with db.transaction(write=False) as s:
            assert await s.scalar(text("SELECT 1")) == 1
    finally:
        await db.dispose()
        database.drop_database(url)
