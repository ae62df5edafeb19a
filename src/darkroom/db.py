"""Engine and sessions.

Who owns a transaction: the request dependency (``deps.get_session``) or the job wrapper
(``Database.transaction``). Services never commit.

SQLite: WAL journal, foreign keys on, and write transactions opened with ``BEGIN IMMEDIATE`` so
that two writers queue on the lock instead of failing when a read snapshot is upgraded to a
write. Statements run inline on the event loop (``sqlite_inline``: no driver thread; a lock held
by another process is waited for with async retries, never by blocking the loop). Write sessions
use an engine whose pool holds one connection, so the writers of one process wait their turn in
that pool (woken as soon as the previous one commits). WAL checkpoints run in a thread
(``sqlite_checkpoint``), never inside a commit on the loop. PostgreSQL needs none of that.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

from sqlalchemy import ClauseElement, Dialect, event, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import await_only

from darkroom import sqlite_inline
from darkroom.sqlite_checkpoint import WalCheckpointer
from darkroom.uow import run_hooks

WRITE_OPTION = "darkroom_write"


LOCK_TIMEOUT = 30.0  # seconds a statement waits for another process's lock before failing
PING_IDLE_AFTER = 2.0  # PostgreSQL: a pooled connection idle this long is pinged before use
_IDLE_SINCE = "darkroom_idle_since"


def _configure_postgres(engine: AsyncEngine, ping_idle_after: float) -> None:
    """Liveness of pooled PostgreSQL connections, cheaper than ``pool_pre_ping``.

    asyncpg's pre-ping is three round trips (BEGIN, ``;``, ROLLBACK) on every checkout: 1-4 ms
    of the 7-8 ms claim transaction of a broker worker (bench figure 2). Instead a connection the
    server has closed (a restart, ``pg_terminate_backend``: asyncpg sees the socket close) is
    replaced at checkout for free, and only one that sat idle for ``ping_idle_after`` seconds is
    pinged. A connection that dies while in use fails its transaction, as it would with a
    pre-ping too, and SQLAlchemy then replaces every older connection of the pool.
    """

    @event.listens_for(engine.sync_engine, "connect")
    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _check_alive(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed the connection")
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) >= ping_idle_after:
            try:
                dbapi_connection.ping()
            except Exception as exc:  # the pool replaces it (and retries the checkout)
                raise DisconnectionError(str(exc)) from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    # the connection's pragmas are set by ``sqlite_inline.connector``
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # straight to the driver: a statement through SQLAlchemy's execution path costs more than
        # SQLite's own BEGIN (four per task; bench figure 3). ``run`` waits out another process's lock.
        inline: sqlite_inline.InlineConnection = conn.connection.driver_connection
        sql = "BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN"
        try:
            await_only(inline.run(inline.execute_now, sql))
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it ("database is locked": OperationalError)
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


class DriverStatement:
    """A statement compiled once per dialect into the driver's SQL and positional parameters
    (bound through the columns' types, e.g. aware datetimes to naive UTC), to run on the driver
    connection itself. For a hot statement whose SQLAlchemy execution costs more than the
    database's work (``Database.fetch_autocommit``)."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: tuple[Dialect, str, list[tuple[str, Any]]] | None = None

    def compiled_for(self, dialect: Dialect, values: Mapping[str, Any]) -> list[Any]:
        if self._compiled is None or self._compiled[0] is not dialect:
            compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
            order = compiled.positiontup or []
            binds = [(name, compiled.binds[name].type.bind_processor(dialect)) for name in order]
            self._compiled = (dialect, compiled.string, binds)
        _, sql, binds = self._compiled
        return [sql, *(process(values[name]) if process else values[name] for name, process in binds)]


class Database:
    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        lock_timeout: float = LOCK_TIMEOUT,
        ping_idle_after: float = PING_IDLE_AFTER,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = make_url(url).database or ":memory:"

            def sqlite_engine(**pool: Any) -> AsyncEngine:
                connect = sqlite_inline.connector(path, timeout=lock_timeout)
                return create_async_engine(url, echo=echo, async_creator=connect, **pool)

            self.engine = sqlite_engine(pool_size=8, max_overflow=8)
            _configure_sqlite(self.engine)
            # SQLite has one writer at a time. Writers of this process queue for the single
            # connection of a pool of its own (a FIFO wake-up when the previous writer commits)
            # instead of racing for the file lock: a loser of that race sleeps in SQLite's busy
            # handler (1, 2, 5, 10 ... 100 ms polls), which under load made the pipeline
            # mostly wait (bench figures 2 and 3). Other processes still meet the busy timeout.
            self.write_engine = sqlite_engine(pool_size=1, max_overflow=0, pool_timeout=60)
            _configure_sqlite(self.write_engine)
            # One SELECT needs no BEGIN ... ROLLBACK around it: in autocommit mode SQLite gives the
            # statement its own read snapshot (the status poll, bench figure 5).
            self.single_read_engine = sqlite_engine(pool_size=4, max_overflow=12, pool_reset_on_return=None)
            self.owned_engines = [self.engine, self.write_engine, self.single_read_engine]
            self.checkpointer = WalCheckpointer(path) if path != ":memory:" else None
            if self.checkpointer is not None:
                checkpointer = self.checkpointer

                @event.listens_for(self.write_engine.sync_engine, "connect")
                def _start_checkpoints(*_: Any) -> None:  # once the file exists and is in use
                    checkpointer.start()
        else:
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=20)
            _configure_postgres(self.engine, ping_idle_after)
            self.write_engine = self.engine
            self.owned_engines = [self.engine]
            self.checkpointer = None
        # the same pool; a connection is switched to autocommit while checked out (on asyncpg a
        # client-side flag, no round trip) and back when it returns
        self.autocommit_engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
        if not self.is_sqlite:  # one statement, its own transaction: no BEGIN / ROLLBACK round trips
            self.single_read_engine = self.autocommit_engine
        write_engine = self.write_engine.execution_options(**{WRITE_OPTION: True})
        # Copied into every session's ``info`` (e.g. the event hub that after-commit hooks wake).
        self.session_info: dict[str, Any] = {}
        self.read_sessions = async_sessionmaker(self.engine, expire_on_commit=False, info=self.session_info)
        self.write_sessions = async_sessionmaker(write_engine, expire_on_commit=False, info=self.session_info)
        self.single_read_sessions = async_sessionmaker(
            self.single_read_engine, expire_on_commit=False, info=self.session_info
        )

    def session(self, *, write: bool) -> AsyncSession:
        return (self.write_sessions if write else self.read_sessions)()

    @asynccontextmanager
    async def single_read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one SELECT whose rows are read at once, sent without a transaction
        around it (SQLite: autocommit mode; PostgreSQL: autocommit, no BEGIN/ROLLBACK round trips);
        the statement has its own snapshot."""
        async with self.single_read_engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def single_read_session(self) -> AsyncIterator[AsyncSession]:
        """``single_read`` for an ORM read of one statement (the user lookup of a write request)."""
        async with self.single_read_sessions() as session:
            yield session

    async def fetch_autocommit(self, statement: DriverStatement, values: Mapping[str, Any]) -> list[Any]:
        """Run one statement as its own transaction on the driver (asyncpg) and return its rows:
        no ``BEGIN``/``COMMIT`` round trips, none of SQLAlchemy's per-execution work (the
        PostgreSQL claim; bench figure 2). Rows are asyncpg ``Record``s (by name or position)."""
        async with self.autocommit_engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            rows: list[Any] = await raw.fetch(*statement.compiled_for(self.engine.dialect, values))
            return rows

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits at the end of the block, or rolls back on error."""
        async with self.session(write=write) as session:
            try:
                async with session.begin():
                    yield session
            except BaseException:
                await run_hooks(session, committed=False)
                raise
            await run_hooks(session, committed=True)

    async def dispose(self) -> None:
        for engine in self.owned_engines:
            await engine.dispose()
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)
