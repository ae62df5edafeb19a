"""The SQLite write path: one writer connection per process, writers queue without failing."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from darkroom.db import Database, DriverStatement, execute
from darkroom.models.base import UTCDateTime
from darkroom.uow import after_commit, on_rollback
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


async def test_core_transactions_queue_with_session_writers_begin_late_and_run_hooks(tmp_path: Path) -> None:
    """A ``DriverTransaction`` (SQLite's ``core_transaction``) takes the same write connection as
    the write sessions, in the same queue; it takes it only at its first statement; its
    after-commit hooks run after the commit and its rollback hooks after a failure; and after a
    failed statement the connection goes back to the pool for the next writer."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    table = Table("t", MetaData(), Column("n", Integer, primary_key=True))
    add = DriverStatement(insert(table))
    seen: list[str] = []
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        active = most = 0

        async def writer(n: int) -> None:
            nonlocal active, most
            async with db.core_transaction() if n % 2 else db.transaction() as s:
                await execute(s, add, {"n": n})
                active += 1
                most = max(most, active)
                await asyncio.sleep(0)  # let the others try to write meanwhile
                active -= 1

        await asyncio.gather(*(writer(n) for n in range(40)))
        assert most == 1  # one write transaction at a time, of either kind

        async with db.transaction() as holding:
            await execute(holding, add, {"n": 100})  # holds the write connection
            async with asyncio.timeout(2):  # no statement: it never waits for the connection
                async with db.core_transaction() as empty:
                    after_commit(empty, partial(_note, seen, "empty committed"))
        assert seen == ["empty committed"]

        async with db.core_transaction() as s:
            await execute(s, add, {"n": 101})
            after_commit(s, partial(_note, seen, "committed"))
            on_rollback(s, partial(_note, seen, "rolled back"))
            assert seen == ["empty committed"]  # not before the commit
        assert seen[-1] == "committed"

        async def duplicate() -> None:
            async with db.core_transaction() as s:
                await execute(s, add, {"n": 102})
                on_rollback(s, partial(_note, seen, "rolled back"))
                await execute(s, add, {"n": 101})  # taken

        with pytest.raises(IntegrityError):
            await duplicate()
        assert seen[-1] == "rolled back"
        async with asyncio.timeout(2), db.core_transaction() as s:  # the connection is back
            await execute(s, add, {"n": 103})
        async with db.transaction(write=False) as r:
            numbers = list(await r.scalars(text("SELECT n FROM t WHERE n >= 100 ORDER BY n")))
    finally:
        await db.dispose()
    assert numbers == [100, 101, 103]  # 102 was rolled back with the failed statement


async def test_a_core_transaction_whose_commit_fails_rolls_back_and_frees_the_connection(
    tmp_path: Path,
) -> None:
    """A COMMIT can fail (here a deferred foreign key, checked only then): the caller gets the
    error, its rollback hooks run, nothing of it is kept, and the write connection is replaced so
    that the next writers, of both kinds, go on."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    meta = MetaData()
    Table("parent", meta, Column("id", Integer, primary_key=True))
    child = Table("child", meta, Column("id", Integer, primary_key=True), Column("parent_id", Integer))
    add_child = DriverStatement(insert(child))
    seen: list[str] = []
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
            await s.execute(
                text(
                    "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER "
                    "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
                )
            )

        async def orphan() -> None:
            async with db.core_transaction() as t:
                await execute(t, add_child, {"id": 100, "parent_id": 42})  # no parent: fails at COMMIT
                on_rollback(t, partial(_note, seen, "rolled back"))
                after_commit(t, partial(_note, seen, "committed"))

        with pytest.raises(IntegrityError):
            await orphan()
        assert seen == ["rolled back"]
        assert db.write_engine.sync_engine.pool.checkedin() <= 1  # given back once, not twice
        for _ in range(3):  # the pool's one connection is usable again, for either kind of writer
            async with asyncio.timeout(2), db.core_transaction() as t:
                await execute(t, add_child, {"parent_id": None})
            async with asyncio.timeout(2), db.transaction() as s:
                await s.execute(text("INSERT INTO child (parent_id) VALUES (NULL)"))
        async with db.transaction(write=False) as r:
            ids = list(await r.scalars(text("SELECT id FROM child ORDER BY id")))
    finally:
        await db.dispose()
    assert ids == [1, 2, 3, 4, 5, 6]  # not the orphan (100)


async def _note(seen: list[str], what: str) -> None:
    seen.append(what)


async def test_core_transaction_is_a_session_on_postgres() -> None:
    """PostgreSQL has no write lock to queue for: ``core_transaction`` is ``transaction()``."""
    url = database.create_database()
    db = Database(url)
    try:
        async with db.core_transaction() as s:
            assert isinstance(s, AsyncSession)
            assert await s.scalar(text("SELECT 1")) == 1
    finally:
        await db.dispose()
        database.drop_database(url)


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


async def test_fetch_single_reads_typed_named_rows_outside_any_transaction(
    tmp_path: Path, test_database: str | None
) -> None:
    """The driver read (the status poll's): bound and literal parameters, values through their
    column types (aware datetimes, booleans, whatever the driver returns), rows by column name;
    a write still open is not seen and does not block it (SQLite: one reader connection for all)."""
    url = test_database or f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    meta = MetaData()
    items = Table(
        "fetch_items",
        meta,
        Column("id", String(8), primary_key=True),
        Column("kind", String(8), nullable=False),
        Column("active", Boolean, nullable=False),
        Column("at", UTCDateTime, nullable=False),
    )
    when = datetime(2026, 11, 29, 7, 30, 15, 123456, tzinfo=UTC)
    statement = DriverStatement(
        select(items.c.id, items.c.active, items.c.at)
        .where(items.c.kind == "photo", items.c.id >= bindparam("first"))
        .order_by(items.c.id)
    )
    db = Database(url)
    try:
        async with db.transaction() as s:
            await s.run_sync(lambda sync: meta.create_all(sync.connection()))
            await s.execute(
                insert(items),
                [
                    {"id": "a", "kind": "photo", "active": True, "at": when},
                    {"id": "b", "kind": "mask", "active": True, "at": when},
                    {"id": "c", "kind": "photo", "active": False, "at": when},
                ],
            )
        async with db.transaction() as w:
            await w.execute(insert(items), {"id": "d", "kind": "photo", "active": True, "at": when})
            during = await db.fetch_single(statement, {"first": "a"})
        after = await asyncio.gather(*(db.fetch_single(statement, {"first": "b"}) for _ in range(3)))
    finally:
        await db.dispose()
    assert [(r.id, r.active, r.at) for r in during] == [("a", True, when), ("c", False, when)]
    assert type(during[0].active) is bool and during[0].at.tzinfo is not None
    assert [[r.id for r in rows] for rows in after] == [["c", "d"]] * 3


async def test_fetch_single_raises_sqlite_errors_as_sqlalchemys(tmp_path: Path) -> None:
    """The app answers SQLAlchemy's database errors with a 503; a raw sqlite3 error would be a 500."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    try:
        with pytest.raises(OperationalError):
            await db.fetch_single(DriverStatement(select(text("n")).select_from(text("missing"))), {})
    finally:
        await db.dispose()


@pytest.mark.parametrize("kind", ["session", "core"])
async def test_execute_runs_in_the_sessions_transaction_with_defaults_and_typed_returning(
    tmp_path: Path, test_database: str | None, kind: str
) -> None:
    """``db.execute`` (SQLite: straight to the driver) behaves as SQLAlchemy's execution does:
    Python-side defaults and ``onupdate`` filled in, literals bound, RETURNING rows typed, an
    executemany for a list, constraint errors as SQLAlchemy's, and everything inside the
    transaction (a rollback takes it back): in a session's transaction and in a
    ``core_transaction`` (SQLite: a ``DriverTransaction``, no session)."""
    url = test_database or f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    counter = itertools.count(1)
    meta = MetaData()
    rows_table = Table(
        "exec_rows",
        meta,
        Column("id", String(8), primary_key=True, default=lambda: f"r{next(counter)}"),
        Column("kind", String(8), nullable=False),
        Column("n", Integer, nullable=False, default=7),
        Column("data", JSON),
        Column("at", UTCDateTime, nullable=False, default=lambda: datetime(2026, 1, 1, tzinfo=UTC)),
        Column("changed", UTCDateTime, onupdate=lambda: datetime(2026, 2, 2, tzinfo=UTC)),
    )
    insert_many = DriverStatement(insert(rows_table))
    insert_one = DriverStatement(insert(rows_table).returning(rows_table.c.id, rows_table.c.at))
    bump = DriverStatement(
        update(rows_table)
        .where(rows_table.c.kind == "photo", rows_table.c.n >= bindparam("b_min"))
        .values(n=rows_table.c.n + 1)
        .returning(rows_table.c.id, rows_table.c.n, rows_table.c.data, rows_table.c.changed)
    )
    db = Database(url)
    writes = db.transaction if kind == "session" else db.core_transaction
    try:
        async with db.transaction() as s:
            await s.run_sync(lambda sync: meta.create_all(sync.connection()))
        async with writes() as s:
            first = (await execute(s, insert_one, {"kind": "photo", "data": {"a": [1, 2]}})).one_or_none()
            assert (first.id, first.at) == ("r1", datetime(2026, 1, 1, tzinfo=UTC))
            await execute(s, insert_many, [{"kind": "photo", "n": 9}, {"kind": "mask", "n": 9}])
            bumped = (await execute(s, bump, {"b_min": 7})).all()
        assert sorted((r.id, r.n, r.data, r.changed) for r in bumped) == [
            ("r1", 8, {"a": [1, 2]}, datetime(2026, 2, 2, tzinfo=UTC)),
            ("r2", 10, None, datetime(2026, 2, 2, tzinfo=UTC)),
        ]
        with pytest.raises(IntegrityError):
            async with writes() as s:
                await execute(s, insert_many, {"id": "r1", "kind": "dup"})

        async def rolled_back() -> None:
            async with writes() as s:
                await execute(s, insert_many, {"id": "gone", "kind": "photo"})
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await rolled_back()
        async with db.transaction(write=False) as s:
            ids = list(await s.scalars(select(rows_table.c.id).order_by(rows_table.c.id)))
        assert ids == ["r1", "r2", "r3"]
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 11, 29, 7, 30, 15, 123456, tzinfo=UTC),
        datetime(2026, 11, 29, 7, 30, 15, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 3, 1, 0, 30, 0, 5, tzinfo=timezone(timedelta(hours=2))),  # the day before in UTC
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_utc_datetimes_are_stored_on_sqlite_as_sqlalchemy_writes_them(when: datetime) -> None:
    # existing rows were written by SQLAlchemy's DATETIME; SQLite compares them to new ones as text
    column = UTCDateTime()
    dialect = sqlite_dialect()
    sqlalchemy_datetime = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert sqlalchemy_datetime is not None
    expected = sqlalchemy_datetime(column.process_bind_param(when, dialect))
    fast = column.bind_processor(dialect)
    assert fast is not None
    assert fast(when) == expected
    assert fast(None) is None
    with pytest.raises(ValueError, match="naive"):
        fast(when.replace(tzinfo=None))


async def test_utc_datetimes_round_trip_and_compare_on_sqlite(tmp_path: Path) -> None:
    meta = MetaData()
    items = Table(
        "stamps", meta, Column("id", Integer, primary_key=True), Column("at", UTCDateTime, nullable=False)
    )
    earlier = datetime(2026, 11, 29, 7, 30, 15, tzinfo=UTC)
    later = datetime(2026, 11, 29, 9, 30, 15, 1, tzinfo=timezone(timedelta(hours=2)))  # 07:30:15.000001 UTC
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'stamps.db'}")
    try:
        async with db.transaction() as s:
            await s.run_sync(lambda sync: meta.create_all(sync.connection()))
            await s.execute(insert(items), [{"id": 1, "at": earlier}, {"id": 2, "at": later}])
        async with db.transaction(write=False) as s:
            rows = (await s.execute(select(items.c.id, items.c.at).where(items.c.at > earlier))).all()
            stored = (await s.execute(text("SELECT at FROM stamps ORDER BY id"))).scalars().all()
    finally:
        await db.dispose()
    assert [(r.id, r.at) for r in rows] == [(2, later)]
    assert rows[0].at.tzinfo is UTC
    assert stored == ["2026-11-29 07:30:15.000000", "2026-11-29 07:30:15.000001"]
