"""SQLite statements run inline on the event loop; another process's lock is waited for with async
retries (the loop keeps running), and a crash mid-transaction leaves nothing behind."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from darkroom.db import Database

# A second process that takes the write lock (BEGIN IMMEDIATE), says so, and holds it until it
# reads a line (or its stdin closes); then commits one row.
HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t (n) VALUES (-1)")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("COMMIT")
    """
)


def _make_table(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (n INTEGER NOT NULL)")
    conn.close()


def _count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "inline.db"
    _make_table(path)
    return path


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{db_path}", lock_timeout=30)
    yield database
    await database.dispose()


@pytest.fixture
def holder(db_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


async def test_writer_waits_for_another_process_without_blocking_the_loop(
    db: Database, db_path: Path, holder: subprocess.Popen[str]
) -> None:
    async def write() -> None:
        async with db.transaction() as s:
            await s.execute(text("INSERT INTO t (n) VALUES (1)"))

    writing = asyncio.create_task(write())
    ticks = 0
    while ticks < 20:  # the loop runs other work while the write waits for the other process
        await asyncio.sleep(0.001)
        ticks += 1
    assert not writing.done()  # it is really waiting: the other process still holds the lock
    # reads are not held up by the other process's write (WAL) and do not see it
    async with db.transaction(write=False) as r:
        assert await r.scalar(text("SELECT count(*) FROM t")) == 0
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.flush()
    await writing
    assert holder.wait() == 0
    assert _count(db_path) == 2


async def test_writer_gives_up_after_the_lock_timeout_and_writes_nothing(
    db_path: Path, holder: subprocess.Popen[str]
) -> None:
    db = Database(f"sqlite+aiosqlite:///{db_path}", lock_timeout=0.05)
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            async with db.transaction() as s:
                await s.execute(text("INSERT INTO t (n) VALUES (1)"))
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait() == 0
        # the connection is usable again once the other process is done
        async with db.transaction() as s:
            await s.execute(text("INSERT INTO t (n) VALUES (2)"))
    finally:
        await db.dispose()
    conn = sqlite3.connect(db_path)
    assert sorted(n for (n,) in conn.execute("SELECT n FROM t")) == [-1, 2]
    conn.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy import text
    from darkroom.db import Database

    async def main() -> None:
        db = Database("sqlite+aiosqlite:///" + sys.argv[1])
        async def one(n: int) -> None:
            async with db.transaction() as s:
                await s.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
                await asyncio.sleep(0)
        await asyncio.gather(*(one(n) for n in range(200)))
        await db.dispose()

    asyncio.run(main())
    """
)


async def test_two_processes_write_the_same_file_and_every_write_commits(db: Database, db_path: Path) -> None:
    other = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(db_path))

    async def one(n: int) -> None:
        async with db.transaction() as s:
            await s.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": 1000 + n})
            await asyncio.sleep(0)

    await asyncio.gather(*(one(n) for n in range(200)))
    assert await other.wait() == 0
    assert _count(db_path) == 400


CRASHER = textwrap.dedent(
    """
    import asyncio, os, sys
    from sqlalchemy import text
    from darkroom.db import Database

    async def main() -> None:
        db = Database("sqlite+aiosqlite:///" + sys.argv[1])
        async with db.transaction() as s:
            for n in range(50):
                await s.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
            os._exit(3)  # killed mid-transaction: no commit, no rollback, no close

    asyncio.run(main())
    """
)


async def test_a_crash_mid_transaction_leaves_nothing_and_releases_the_lock(
    db: Database, db_path: Path
) -> None:
    crashed = await asyncio.create_subprocess_exec(sys.executable, "-c", CRASHER, str(db_path))
    assert await crashed.wait() == 3
    async with db.transaction() as s:  # the lock died with the process
        await s.execute(text("INSERT INTO t (n) VALUES (7)"))
    async with db.transaction(write=False) as r:
        rows = (await r.execute(text("SELECT n FROM t"))).scalars().all()
    assert rows == [7]
