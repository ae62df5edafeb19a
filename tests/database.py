"""Which database the suite runs on, and throw-away PostgreSQL databases for it.

``DARKROOM_TEST_DATABASE=postgres`` runs the tests on the PostgreSQL server at
``DARKROOM_TEST_PG_URL`` (default: the local one, user postgres). A migrated template database is
made once per run; every test gets ``CREATE DATABASE … TEMPLATE`` of it (fast) and drops it after.
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

    thread = threading.Thread(target=target)
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
