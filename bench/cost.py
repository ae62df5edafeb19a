"""Cost per task without the noise of a loaded machine: statements and CPU, in one process.

    .venv/bin/python -m bench.cost [--tasks 200] [--concurrency 1]

Runs the real app (``create_app`` with the bench's no-op provider, SQLite, in-process workers)
behind httpx's ASGI transport, submits ``--tasks`` tasks the way figure 3 does (multipart with a
tiny PNG) and waits until all of them completed. Two passes over fresh data directories:

* statements: every statement SQLite receives (``sqlite3``'s trace callback), grouped by the
  transaction it ran in — ``create`` (the one that inserts the task), ``claim``, ``finish``
  (the one that records a ledger settlement), ``read`` (read transactions: user lookups, the
  balance check) — per task;
* CPU: ``time.process_time()`` of the whole process (server and client, no counting listeners)
  per task.

Figures of merit for the submit → claim → finish path that do not depend on what else runs on
the machine; ``./run bench --only 3`` shows what they are worth in tasks per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import event

from bench.api_figures import small_png
from bench.server import TASK_TYPE, BenchProvider, Marks
from darkroom.app import create_app
from darkroom.config import Settings


def _settings(data_dir: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        app_env="test",
        data_dir=data_dir,
        jwt_secret="bench-secret-" + "b" * 40,
        log_level="warning",
        signup_credits=10**9,
    )


class Counting:
    """Statements per transaction, the transaction labelled by what it wrote. Counted where
    SQLite receives them (``sqlite3``'s trace callback on every connection of the process), so
    statements sent to the driver directly (``db.execute``, ``Database.fetch_single``) count
    as well as SQLAlchemy's."""

    def __init__(self) -> None:
        self.open: dict[int, list[str]] = defaultdict(list)
        self.by_label: Counter[str] = Counter()
        self.transactions: Counter[str] = Counter()

    @staticmethod
    def label(statements: list[str]) -> str:
        text = "\n".join(s.upper() for s in statements)
        if "COUNT(" in text:
            return "poll"  # the script's own wait for completion, not part of a task's cost
        if "INSERT INTO AI_TASKS" in text:
            return "create"
        if "INSERT INTO CREDIT_TRANSACTIONS" in text:
            return "finish"
        if "UPDATE AI_TASKS" in text or "UPDATE TASK_ATTEMPTS" in text:
            return "claim"
        if any(s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) for s in statements):
            return "other write"
        return "read"

    def _end(self, key: int) -> None:
        statements = self.open.pop(key, [])
        if statements:
            label = self.label(statements)
            self.by_label[label] += len(statements)
            self.transactions[label] += 1

    def trace(self, conn: sqlite3.Connection) -> None:
        key = id(conn)

        def seen(statement: str) -> None:
            head = statement.lstrip()[:8].upper()
            if head.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
                self._end(key)
            elif not head.startswith("PRAGMA"):
                self.open[key].append(statement)

        conn.set_trace_callback(seen)

    def attach(self, db: Any) -> None:
        traced: set[int] = set()
        for engine in db.owned_engines:  # every pooled connection, from its next checkout on

            @event.listens_for(engine.sync_engine.pool, "checkout")
            def _out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
                conn = dbapi_connection.driver_connection._conn
                if id(conn) not in traced:
                    traced.add(id(conn))
                    self.trace(conn)

        if db._reader is not None:  # fetch_single's connection: each statement its own transaction
            reader = db._reader._conn
            key = id(reader)

            def single(statement: str) -> None:
                self.open[key].append(statement)
                self._end(key)

            reader.set_trace_callback(single)


async def _run(tasks: int, concurrency: int, counting: Counting | None) -> float:
    """Submit ``tasks`` tasks and wait for all of them; returns CPU seconds spent doing it."""
    with tempfile.TemporaryDirectory(prefix="darkroom-cost-") as tmp:
        app = create_app(_settings(Path(tmp)), providers=[BenchProvider(Marks())])
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                r = await client.post(
                    "/api/auth/register", json={"email": "cost@example.com", "password": "bench-password-1"}
                )
                r.raise_for_status()
                client.headers["Authorization"] = "Bearer " + r.json()["data"]["accessToken"]
                data = small_png()

                async def submit() -> None:
                    files = {"files": ("in.png", data, "image/png")}
                    r = await client.post("/api/tasks", data={"taskType": TASK_TYPE}, files=files)
                    assert r.status_code == 201, r.text

                async def completed() -> int:
                    r = await client.get("/api/tasks", params={"status": "completed", "limit": 1})
                    return int(r.json()["pagination"]["total"])

                async def batch(n: int) -> None:
                    queue = list(range(n))

                    async def submitter() -> None:
                        while queue:
                            queue.pop()
                            await submit()

                    await asyncio.gather(*(submitter() for _ in range(concurrency)))

                async def until(total: int) -> None:
                    while await completed() < total:  # noqa: ASYNC110 - polling the API is the point
                        await asyncio.sleep(0.005)

                await batch(concurrency)  # warm-up: first-use costs (statement caches, imports)
                await until(concurrency)
                ctx = app.state.ctx
                if counting is not None:
                    counting.attach(ctx.db)
                cpu0 = time.process_time()
                await batch(tasks)
                cpu = time.process_time() - cpu0
                # waiting for the last ones to finish: count the work, not the polling
                while await completed() < tasks + concurrency:
                    t = time.process_time()
                    await asyncio.sleep(0.005)
                    cpu += time.process_time() - t
                return cpu


@contextmanager
def _quiet() -> Iterator[None]:
    import logging

    level = logging.root.level
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        logging.root.setLevel(level)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--cpu-rounds", type=int, default=3, help="CPU passes (median reported)")
    args = parser.parse_args()
    os.environ.setdefault("DARKROOM_LOG_LEVEL", "warning")
    with _quiet():
        counting = Counting()
        asyncio.run(_run(args.tasks, args.concurrency, counting))
        cpus = [asyncio.run(_run(args.tasks, args.concurrency, None)) for _ in range(args.cpu_rounds)]
    n = args.tasks
    print(f"{n} tasks, {args.concurrency} at a time (in process: create_app + bench provider + httpx ASGI)")
    print(f"{'transaction':<12} {'per task':>9} {'statements per task':>20}")
    for label in ("create", "claim", "finish", "read", "other write"):
        if counting.transactions[label]:
            print(
                f"{label:<12} {counting.transactions[label] / n:>9.2f} {counting.by_label[label] / n:>20.2f}"
            )
    total = sum(v for k, v in counting.by_label.items() if k != "poll")
    transactions = sum(v for k, v in counting.transactions.items() if k != "poll")
    print(f"{'all':<12} {transactions / n:>9.2f} {total / n:>20.2f}")
    per_task = [1000 * c / n for c in cpus]
    print(
        f"CPU per task (process incl. client): median {statistics.median(per_task):.2f} ms "
        f"({', '.join(f'{c:.2f}' for c in per_task)})"
    )


if __name__ == "__main__":
    main()
