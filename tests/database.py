"""Which database the suite runs on, and throw-away PostgreSQL databases for it.

``DARKROOM_TEST_DATABASE=postgres`` runs the tests on the PostgreSQL server at
``DARKROOM_TEST_PG_URL`` (default: the local one, user postgres). A migrated template database is
made once per run; every test gets ``CREATE DATABASE … TEMPLATE`` of it, made while the test before
it runs, and drops it after (:class:`TemplateCopies`).
Without the variable the tests use a SQLite file in the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import sqlite3
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

BACKEND = os.environ.get("DARKROOM_TEST_DATABASE", "sqlite").lower()
if BACKEND not in {"sqlite", "postgres"}:
    raise RuntimeError(f"DARKROOM_TEST_DATABASE must be sqlite or postgres, not {BACKEND!r}")
ON_POSTGRES = BACKEND == "postgres"
PG_URL = os.environ.get("DARKROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

_names = itertools.count()
TEST_DATABASES_THREAD = "test-databases"
"""Name prefix of the threads that make and drop the tests' database copies (:class:`TemplateCopies`)."""
_RUN = f"{os.getpid()}_{secrets.token_hex(3)}"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh loop in a thread (safe inside or outside a loop)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    # named after the calling thread, so that TemplateCopies' connections can be told apart
    thread = threading.Thread(target=target, name=f"{threading.current_thread().name}/run_sync")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def pg_url(database: str, base: str = PG_URL) -> str:
    return base.rsplit("/", 1)[0] + "/" + database


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(sql: str, base: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(base))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(base: str = PG_URL, template: str | None = None, prefix: str = "darkroom_t") -> str:
    """A new, empty (or template-copied) database; returns its SQLAlchemy URL."""
    name = f"{prefix}_{_RUN}_{next(_names)}"
    sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    run_sync(_admin(sql, base))
    return "postgresql+asyncpg://" + pg_url(name, base).split("://", 1)[1]


def drop_database(url: str, base: str = PG_URL) -> None:
    name = url.rsplit("/", 1)[1]
    run_sync(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', base))


async def _execute(url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def execute(database_url: str | None, data_dir: Path, sql: str) -> list[Any]:
    """Run raw SQL behind the application's back (to break invariants on purpose, or to look)."""
    if database_url and database_url.startswith("postgresql"):
        return run_sync(_execute(database_url, sql))
    with sqlite3.connect(data_dir / "darkroom.db") as db:
        return list(db.execute(sql).fetchall())


class TemplateCopies:
    """Each test's fresh copy of the template database, made one test ahead and dropped after the
    test, both in a background thread.

    ``CREATE DATABASE … TEMPLATE`` takes ~0.2 s and the drop ~0.02-0.07 s here (PostgreSQL writes
    the copy through its WAL), ~2 minutes of the PostgreSQL pass's 523 tests when each test waited
    for both. Made beside the running test, they compete with it for the CPU, so the gain is smaller
    than the wait was (``tests/tasks``: setup + teardown 23 → 9 s, the whole 36.6 → 34.9 s). Every
    test still gets a copy no test has used.
    """

    def __init__(self, template: str) -> None:
        import concurrent.futures

        self.template = template
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=TEST_DATABASES_THREAD)
        self._next = self._pool.submit(create_database, template=template)

    def take(self) -> str:
        """A fresh copy (waits for the one being made), and the next one started."""
        ready, self._next = self._next, self._pool.submit(create_database, template=self.template)
        return ready.result()

    def give_back(self, url: str) -> None:
        self._pool.submit(drop_database, url)

    def close(self) -> None:
        """Drop the copy made ahead and wait for every drop (before the template is dropped)."""
        spare = self._next
        self._pool.submit(lambda: drop_database(spare.result()))
        self._pool.shutdown(wait=True)
