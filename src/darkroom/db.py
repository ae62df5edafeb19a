"""Engine and sessions.

Who owns a transaction: the request dependency (``deps.get_session``), the job wrapper
(``Database.transaction``), or for the task pipeline's writes of Core statements only (create,
claim, finish) ``Database.core_transaction`` (on SQLite a ``DriverTransaction``: no ORM session).
Services never commit.

SQLite: WAL journal, foreign keys on, and write transactions opened with ``BEGIN IMMEDIATE`` so
that two writers queue on the lock instead of failing when a read snapshot is upgraded to a
write. Statements run inline on the event loop (``sqlite_inline``: no driver thread; a lock held
by another process is waited for with async retries, never by blocking the loop). Write sessions
use an engine whose pool holds one connection, so the writers of one process wait their turn in
that pool (woken as soon as the previous one commits). WAL checkpoints run in a thread
(``sqlite_checkpoint``), never inside a commit on the loop. PostgreSQL needs none of that.

The task pipeline's hot statements are ``DriverStatement``s: compiled once, sent to the driver
without SQLAlchemy's per-execution work (``execute`` inside a session's transaction on SQLite,
``fetch_single`` for one-statement reads, ``fetch_autocommit`` for the PostgreSQL claim). They
bypass SQLAlchemy's execution events and echo; everything else goes through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

from sqlalchemy import ClauseElement, Dialect, Executable, Select, event, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import await_only, greenlet_spawn

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


def _configure_sqlite(engine: AsyncEngine, checkpointer: WalCheckpointer | None = None) -> None:
    # the connection's pragmas are set by ``sqlite_inline.connector``
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # straight to the driver: a statement through SQLAlchemy's execution path costs more than
        # SQLite's own BEGIN (four per task; bench figure 3). ``run`` waits out another process's lock.
        inline: sqlite_inline.InlineConnection = conn.connection.driver_connection
        write = bool(conn.get_execution_options().get(WRITE_OPTION))
        await_only(_begin_sqlite(inline, write=write, checkpointer=checkpointer))


async def _begin_sqlite(
    inline: sqlite_inline.InlineConnection, *, write: bool, checkpointer: WalCheckpointer | None
) -> None:
    """``BEGIN`` (``BEGIN IMMEDIATE`` for a write, after a pending restart of the WAL) on the
    driver, waiting out another process's lock without blocking the loop (``run``): for a
    session's connection (the engine's begin event) and for a ``DriverTransaction``."""
    if write and checkpointer is not None and checkpointer.restart_pending:
        await checkpointer.yield_to_restart()  # the WAL is being started over
    sql = "BEGIN IMMEDIATE" if write else "BEGIN"
    try:
        await inline.run(inline.execute_now, sql)
    except sqlite3.Error as exc:  # as SQLAlchemy would raise it ("database is locked": OperationalError)
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


_FROM_ROW, _DEFAULT, _OWN = object(), object(), object()  # where a bound parameter comes from


class DriverStatement:
    """A statement compiled once per dialect into the driver's SQL and positional parameters
    (bound through the columns' types, e.g. aware datetimes to naive UTC), to run on the driver
    connection itself. For a hot statement whose SQLAlchemy execution costs more than the
    database's work (``Database.fetch_autocommit``, ``Database.fetch_single``)."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: tuple[Dialect, str, list[tuple[str, Any, Any]]] | None = None
        self._rows: tuple[Dialect, Callable[[Iterable[Any]], Any], list[tuple[int, Any]]] | None = None
        self._bound: dict[tuple[Dialect, tuple[str, ...]], tuple[str, list[tuple[object, Any, Any]]]] = {}

    def rows(self, dialect: Dialect, raw: Iterable[Sequence[Any]]) -> list[Any]:
        """The driver rows of a SELECT (or of a statement's RETURNING) as named tuples (by column
        key), each value through its column type's result processing (SQLite: text to aware
        datetimes, 0/1 to booleans, JSON text to objects)."""
        if self._rows is None or self._rows[0] is not dialect:
            columns = list(cast(Select[Any], self.statement).exported_columns)
            row_type: Any = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]
            make: Callable[[Iterable[Any]], Any] = row_type._make
            processors = [
                (i, p)
                for i, c in enumerate(columns)
                if (p := c.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
            ]
            self._rows = (dialect, make, processors)
        _, make, processors = self._rows
        if not processors:
            return [make(row) for row in raw]
        out = []
        for row in raw:
            values = list(row)
            for i, process in processors:
                values[i] = process(values[i])
            out.append(make(values))
        return out

    def bound(self, dialect: Dialect, values: Sequence[Mapping[str, Any]]) -> tuple[str, list[list[Any]]]:
        """The SQL and the driver's positional parameters for each of ``values`` (executemany
        when more than one), as SQLAlchemy's execution would send them: compiled for the keys
        given (an INSERT lists the columns it is given), literals bound with their own values,
        Python-side column defaults and ``onupdate`` values (ids, ``created_at``,
        ``updated_at``) filled in, every value through its type's bind processing."""
        keys = tuple(sorted(values[0]))
        cached = self._bound.get((dialect, keys))
        if cached is None:
            cached = self._bind_plan(dialect, keys, many=len(values) > 1)
            self._bound[(dialect, keys)] = cached
        sql, plan = cached
        out = []
        for row in values:
            params = []
            for kind, source, process in plan:
                if kind is _FROM_ROW:
                    value = row[source]
                elif kind is _DEFAULT:
                    value = source.arg(None) if source.is_callable else source.arg
                else:
                    value = source
                params.append(process(value) if process is not None else value)
            out.append(params)
        return sql, out

    def _bind_plan(
        self, dialect: Dialect, keys: tuple[str, ...], *, many: bool
    ) -> tuple[str, list[tuple[object, Any, Any]]]:
        """Where each positional parameter comes from, what ``construct_params`` would look up
        for it, decided once per set of keys: the row's value for the bind's key, a Python-side
        default or ``onupdate`` of a column the row does not give, or the bind's own value (a
        literal); then its type's bind processor. Per execution that is one loop over the
        parameters instead of SQLAlchemy's dict of every bind (bench figure 3)."""
        compiled = cast(
            SQLCompiler, self.statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=many)
        )
        defaults: dict[str, Any] = {c.key: c.default for c in compiled.insert_prefetch}
        defaults.update((c.key, c.onupdate) for c in compiled.update_prefetch)
        for key, default in defaults.items():  # a SQL-expression default is SQLAlchemy's to render
            if not (default.is_scalar or default.is_callable):
                raise TypeError(f"{key}: only Python-side defaults can be sent to the driver")
        processors: Mapping[str, Any] = compiled._bind_processors
        plan: list[tuple[object, Any, Any]] = []
        for name in compiled.positiontup or []:
            bind = compiled.binds[name]
            if bind.expanding:
                raise TypeError(f"{name}: an expanding IN cannot be sent to the driver")
            process = processors.get(name)
            if bind.key in keys:
                plan.append((_FROM_ROW, bind.key, process))
            elif name in defaults:
                plan.append((_DEFAULT, defaults[name], process))
            else:  # a literal (``role == "output"``): the bind's own value
                plan.append((_OWN, bind.effective_value, process))
        return compiled.string, plan

    def compiled_for(self, dialect: Dialect, values: Mapping[str, Any]) -> list[Any]:
        if self._compiled is None or self._compiled[0] is not dialect:
            compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
            order = compiled.positiontup or []
            binds = []
            for name in order:  # a literal (``role == "output"``) is a bind with its own value
                bind = compiled.binds[name]
                binds.append((name, bind.type.bind_processor(dialect), bind.effective_value))
            self._compiled = (dialect, compiled.string, binds)
        _, sql, binds = self._compiled
        params = []
        for name, process, own in binds:
            value = values.get(name, own)
            params.append(process(value) if process else value)
        return [sql, *params]


class DriverResult:
    """What ``execute`` returns on SQLite: the rows (named tuples) and the row count, read the
    way the call sites read SQLAlchemy's ``Result``."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def all(self) -> list[Any]:
        return self.rows

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise MultipleResultsFound("more than one row")
        return self.first()

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        if len(self.rows) != 1:
            raise (NoResultFound if not self.rows else MultipleResultsFound)("expected one row")
        return self.rows[0][0]


async def execute(
    session: AsyncSession | DriverTransaction,
    statement: DriverStatement,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> Any:
    """Run a hot-path Core statement in ``session``'s transaction. On SQLite it goes straight to
    the transaction's driver connection (``DriverStatement.bound``; the result is a
    ``DriverResult``): SQLAlchemy's execution of a statement cost several times SQLite's own
    work on the task pipeline's ~17 statements per task (bench figure 3). On PostgreSQL
    SQLAlchemy runs it (asyncpg's transaction is begun by SQLAlchemy's first statement)."""
    if isinstance(session, DriverTransaction):
        return await session.run(statement, params)
    db: Database | None = session.info.get(_DB_KEY)
    if db is None or not db.is_sqlite:
        return await session.execute(cast(Executable, statement.statement), params)
    sync = session.sync_session
    if sync.autoflush and (sync.new or sync.dirty or sync.deleted):  # as session.execute would
        await session.flush()
    transaction = sync.get_transaction()
    held: tuple[Any, Any] | None = session.info.get(_DRIVER_KEY)
    if held is None or held[0] is not transaction:
        conn = await session.connection()  # begins the transaction (BEGIN IMMEDIATE on writes)
        driver = (await conn.get_raw_connection()).driver_connection
        held = session.info[_DRIVER_KEY] = (sync.get_transaction(), driver)
    return await _run_inline(held[1], db.engine.dialect, statement, params)


async def _run_inline(
    inline: sqlite_inline.InlineConnection,
    dialect: Dialect,
    statement: DriverStatement,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> DriverResult:
    rows = [params] if isinstance(params, Mapping) else list(params)
    sql, bound = statement.bound(dialect, rows)
    try:
        found, count = await inline.run(inline.run_now, sql, bound)
    except sqlite3.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, OperationalError, …)
        raise DBAPIError.instance(sql, bound, exc, sqlite3.Error) from exc
    return DriverResult(statement.rows(dialect, found) if found else [], count)


_DB_KEY = "darkroom_db"
_DRIVER_KEY = "darkroom_driver_connection"


class DriverTransaction:
    """A SQLite write transaction of ``DriverStatement``s only (``execute``), without an ORM
    session: ``Database.core_transaction``. It takes the write pool's one connection at its first
    statement (as a session does: work before it, e.g. storing an upload, does not hold the write
    lock), runs ``BEGIN IMMEDIATE``, the statements and ``COMMIT`` on the driver, and gives the
    connection back. The after-commit and rollback hooks (``uow``) live in ``info`` as on a
    session. A session's transaction costs ~0.4 ms of CPU around SQLite's ~0.02 ms on the machines
    of bench figure 3 (session, greenlet switches, connection and transaction objects, events);
    this costs two greenlet switches (the pool's checkout and check-in)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.info: dict[str, Any] = dict(db.session_info)
        self._fairy: Any = None
        self._inline: sqlite_inline.InlineConnection | None = None

    async def _begin(self) -> sqlite_inline.InlineConnection:
        # the pool's FIFO queue: the writers of this process take turns, whichever path they use
        fairy = await greenlet_spawn(self.db.write_engine.sync_engine.pool.connect)
        try:
            inline = cast(sqlite_inline.InlineConnection, fairy.driver_connection)
            await _begin_sqlite(inline, write=True, checkpointer=self.db.checkpointer)
        except BaseException:
            await greenlet_spawn(fairy.close)
            raise
        self._fairy, self._inline = fairy, inline
        return inline

    async def run(
        self, statement: DriverStatement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> DriverResult:
        inline = self._inline if self._inline is not None else await self._begin()
        return await _run_inline(inline, self.db.engine.dialect, statement, params)

    async def _end(self, *, commit: bool) -> None:
        inline, fairy = self._inline, self._fairy
        if inline is None:
            return
        self._inline = self._fairy = None
        try:
            if commit:
                try:
                    await inline.commit()
                except sqlite3.Error as exc:
                    raise DBAPIError.instance("COMMIT", None, exc, sqlite3.Error) from exc
            else:
                await inline.rollback()
        except BaseException:  # in an unknown state: closed, and the pool opens a new one instead
            await greenlet_spawn(fairy.invalidate)  # (which gives the connection's place back)
            raise
        await greenlet_spawn(fairy.close)

    @asynccontextmanager
    async def owned(self) -> AsyncIterator[DriverTransaction]:
        try:
            yield self
            await self._end(commit=True)
        except BaseException:
            try:
                await self._end(commit=False)
            finally:
                await run_hooks(self, committed=False)
            raise
        await run_hooks(self, committed=True)


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
        self._reader: sqlite_inline.InlineConnection | None = None
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
            self.checkpointer = WalCheckpointer(path) if path != ":memory:" else None
            _configure_sqlite(self.write_engine, self.checkpointer)
            self.owned_engines = [self.engine, self.write_engine]
            # ``fetch_single``'s connection: a read runs from execute to the last row without
            # leaving the event loop, so one connection serves every such read of the process
            self._open_reader = sqlite_inline.connector(path, timeout=lock_timeout)
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
        write_engine = self.write_engine.execution_options(**{WRITE_OPTION: True})
        # Copied into every session's ``info`` (e.g. the event hub that after-commit hooks wake).
        self.session_info: dict[str, Any] = {_DB_KEY: self}
        self.read_sessions = async_sessionmaker(self.engine, expire_on_commit=False, info=self.session_info)
        self.write_sessions = async_sessionmaker(write_engine, expire_on_commit=False, info=self.session_info)

    def session(self, *, write: bool) -> AsyncSession:
        return (self.write_sessions if write else self.read_sessions)()

    async def fetch_autocommit(self, statement: DriverStatement, values: Mapping[str, Any]) -> list[Any]:
        """Run one statement as its own transaction on the driver (asyncpg) and return its rows:
        no ``BEGIN``/``COMMIT`` round trips, none of SQLAlchemy's per-execution work (the
        PostgreSQL claim; bench figure 2). Rows are asyncpg ``Record``s (by name or position)."""
        async with self.autocommit_engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            rows: list[Any] = await raw.fetch(*statement.compiled_for(self.engine.dialect, values))
            return rows

    async def fetch_single(self, statement: DriverStatement, values: Mapping[str, Any]) -> list[Any]:
        """One SELECT on the driver, outside any transaction (it has its own snapshot), its rows
        as named tuples (``DriverStatement.rows``). No pool checkout and none of SQLAlchemy's
        per-execution work: on SQLite the statement runs inline on a connection of its own, on
        PostgreSQL through ``fetch_autocommit`` (the status poll and the user lookup of writes;
        bench figures 3 and 5). SQLAlchemy's events and echo do not see it."""
        if not self.is_sqlite:
            return statement.rows(self.engine.dialect, await self.fetch_autocommit(statement, values))
        reader = self._reader
        if reader is None:
            reader = await self._open_reader()
            if self._reader is None:
                self._reader = reader
            else:  # another read opened it meanwhile
                reader.stop()
                reader = self._reader
        sql, *params = statement.compiled_for(self.engine.dialect, values)
        try:
            found = await reader.run(reader.fetch_now, sql, params)
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it (the app answers 503, never 500)
            raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc
        return statement.rows(self.engine.dialect, found)

    def core_transaction(self) -> AbstractAsyncContextManager[AsyncSession | DriverTransaction]:
        """A write transaction whose statements all go through ``execute`` (``DriverStatement``s,
        no ORM): on SQLite a ``DriverTransaction``, on PostgreSQL ``transaction()``'s session.
        Commits at the end of the block, or rolls back on error; then the hooks run. The task
        pipeline's writes (create, claim, finish; bench figure 3)."""
        if self.is_sqlite:
            return DriverTransaction(self).owned()
        return self.transaction()

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
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)


Transaction = AsyncSession | DriverTransaction  # what ``execute`` and the Core-only services take
