"""SQLite for SQLAlchemy's async engine without a driver thread.

aiosqlite runs every call of a connection in a thread of its own, so each statement is 3-4
hand-offs between the event loop and that thread (cursor, execute, fetch, close), and each
hand-off back waits for a turn of a busy event loop. On SQLite's one write connection the write
lock was held across all of them (bench figures 2, 3 and 5; ``bench/FINDINGS.md``).

This module hands SQLAlchemy's ``sqlite+aiosqlite`` dialect (``create_async_engine(...,
async_creator=connector(path))``) a connection with aiosqlite's async interface whose calls run
pysqlite *inline*: a statement on a local WAL file takes microseconds, so a write transaction
runs from BEGIN IMMEDIATE to COMMIT without leaving the event loop, and holds the lock only as
long as its own CPU work.

Waiting never blocks the loop: connections have SQLite's busy timeout 0, and a statement that
meets a lock held by *another process* (a CLI ``credits grant``, a second server on the same
file) is retried after an ``asyncio.sleep`` (1 ms, doubling to 16 ms) for up to ``timeout``
seconds, then fails with "database is locked" as the busy timeout would. A statement that
returns SQLITE_BUSY had no effect, so running it again is safe. In-process writers never get
here: they queue for the write engine's single pooled connection (``db.py``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

FIRST_RETRY_DELAY = 0.001
MAX_RETRY_DELAY = 0.016
PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # already set by the migrations; a no-op then
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    # no checkpoint inside a COMMIT on the event loop; sqlite_checkpoint runs them in a thread
    "PRAGMA wal_autocheckpoint=0",
)


def is_busy(exc: sqlite3.Error) -> bool:
    """The database is locked by another connection, and waiting may help.

    SQLITE_BUSY_SNAPSHOT (a deferred transaction whose snapshot is stale) is not retried: only a
    new transaction can get past it."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "database is locked" in str(exc)
    return code & 0xFF == sqlite3.SQLITE_BUSY and code != 517  # 517 = SQLITE_BUSY_SNAPSHOT


class InlineConnection:
    """The subset of ``aiosqlite.Connection`` that SQLAlchemy's aiosqlite dialect uses."""

    def __init__(self, conn: sqlite3.Connection, timeout: float) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn  # the dialect checks it before commit
        self._tx = _InlineQueue()  # the dialect's isolation_level setter posts calls here
        self.timeout = timeout

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn`` now; while another process holds the lock, retry after short async sleeps."""
        delay = FIRST_RETRY_DELAY
        deadline: float | None = None
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.timeout
                if now >= deadline:
                    raise
                await asyncio.sleep(min(delay, deadline - now))
                delay = min(delay * 2, MAX_RETRY_DELAY)

    def execute_now(self, sql: str) -> None:
        """One statement without a cursor object of ours (BEGIN; see ``db._configure_sqlite``)."""
        self._conn.execute(sql).close()

    def run_now(self, sql: str, parameters: Sequence[Sequence[Any]]) -> tuple[list[Any], int]:
        """One statement (executemany for more than one parameter list): its rows, if it returns
        any, and its row count (``db.execute``)."""
        if len(parameters) == 1:
            cursor = self._conn.execute(sql, parameters[0])
        else:
            cursor = self._conn.executemany(sql, parameters)
        try:
            return (cursor.fetchall() if cursor.description else []), cursor.rowcount
        finally:
            cursor.close()

    def fetch_now(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """One statement and all its rows, without leaving the caller (``Database.fetch_single``)."""
        return self._conn.execute(sql, parameters).fetchall()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: Any) -> None:
        self._conn.isolation_level = value

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        cursor = InlineCursor(self)
        await cursor.execute(sql, parameters)
        return cursor

    async def commit(self) -> None:
        await self.run(self._conn.commit)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


class InlineCursor:
    """The subset of ``aiosqlite.Cursor`` that SQLAlchemy uses, over a pysqlite cursor."""

    def __init__(self, owner: InlineConnection) -> None:
        self._owner = owner
        self._cursor = owner._conn.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        await self._owner.run(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        await self._owner.run(self._cursor.executemany, sql, list(parameters))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None


class _InlineQueue:
    """Stands in for aiosqlite's request queue: runs the posted call at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


def connector(path: str, *, timeout: float = 30.0) -> Callable[[], Awaitable[InlineConnection]]:
    """An ``async_creator`` for ``create_async_engine``: opens ``path`` with our pragmas."""

    async def connect() -> InlineConnection:
        # isolation_level=None: we emit BEGIN ourselves (the driver's implicit BEGIN is DEFERRED);
        # timeout=0: waiting for another process's lock is done by ``run`` without blocking the loop
        conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        inline = InlineConnection(conn, timeout)
        try:
            for pragma in PRAGMAS:
                await inline.run(conn.execute, pragma)
        except BaseException:
            conn.close()
            raise
        return inline

    return connect
