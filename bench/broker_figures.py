"""Figures 2 and 3 with the scaled-out pipeline: the API (bench server, ``--no-workers`` by way of
``DARKROOM_BROKER_URL``) sends tasks through Dramatiq on Redis or RabbitMQ to ``bench.worker``
processes (the product's worker with the bench provider), all on a fresh PostgreSQL database."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bench.api_figures import (
    Sizes,
    _client,
    _completed_count,
    _marks,
    _submit,
    _wait_completed,
    dispatch_row,
    small_png,
    submit_all,
    submit_request,
    wait_for_all,
)
from bench.harness import ROOT, Server, cpu_seconds, register
from bench.report import Report, Row

PG_ADMIN = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def _pg_database() -> AsyncIterator[str]:
    name = f"darkroom_bench_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield "postgresql+asyncpg://" + PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _delete_rabbitmq_queue(queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
    finally:
        connection.close()


class Workers:
    """``bench.worker`` processes sharing the server's environment (database, broker, queue)."""

    def __init__(self, server: Server, count: int, concurrency: int) -> None:
        env = {**server.env(), "DARKROOM_AUTO_MIGRATE": "false"}
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.worker", "--concurrency", str(concurrency)],
                env=env,
                cwd=ROOT,
                stdout=server.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for _ in range(count)
        ]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)


def _worker_marks(path: Path) -> dict[str, float]:
    started = {}
    if path.exists():
        for line in path.read_text().splitlines():
            tid, s, _ = line.split()
            started[tid] = float(s)
    return started


async def _dispatch(server: Server, token: str, n: int, marks_file: Path) -> list[dict[str, float]]:
    data = small_png()
    async with _client(server, token) as client:
        await _marks(client)
        for _ in range(n):
            tid = await _submit(client, data)
            await _wait_completed(client, tid, 0.005)
        committed = await _marks(client)
    started = _worker_marks(marks_file)
    return [{"committed": m["committed"], "started": started.get(m["task"], 0.0)} for m in committed]


async def _throughput(server: Server, token: str, n: int, concurrency: int, delay: float = 0.0) -> float:
    data = small_png()
    headers, body = submit_request(token, data, delay)
    async with _client(server, token, concurrency) as client:
        done_before = await _completed_count(client)
        t0 = time.perf_counter()
        await submit_all(server, headers, body, n, concurrency)
        await wait_for_all(client, data, done_before + n, delay)
        return (n + 1) / (time.perf_counter() - t0)  # and wait_for_all's marker


def _scaled_server(db_url: str, broker_url: str, queue: str, marks_file: Path) -> Server:
    return Server(
        kind="bench",
        env_extra={
            "DATABASE_URL": db_url,
            "DARKROOM_BROKER_URL": broker_url,
            "DARKROOM_BROKER_QUEUE": queue,
            "DARKROOM_MAX_FILES": "5",
            "BENCH_MARKS_FILE": str(marks_file),
        },
    )


async def _dispatch_figure(broker: str, broker_url: str, sizes: Sizes, report: Report) -> None:
    queue = f"bench-{secrets.token_hex(4)}"
    async with _pg_database() as db_url:
        server = _scaled_server(db_url, broker_url, queue, Path())
        server.env_extra["BENCH_MARKS_FILE"] = str(server.data_dir / "marks.txt")
        marks_file = Path(server.env_extra["BENCH_MARKS_FILE"])
        with server:
            token = register(server.url)
            workers = Workers(server, 1, 8)
            try:

                async def go() -> list[dict[str, float]]:
                    async with _client(server, token) as client:  # warm-up: the worker is up
                        tid = await _submit(client, small_png())
                        await _wait_completed(client, tid, 0.01)
                    return await _dispatch(server, token, sizes.broker_dispatch_tasks, marks_file)

                marks = await go()
            finally:
                workers.stop()
                if broker == "RabbitMQ":
                    _delete_rabbitmq_queue(queue)
    dispatch_row(
        marks,
        f"Dramatiq on {broker}, PostgreSQL, one `darkroom worker` process",
        report,
        "one task at a time; commit (API process) → Dramatiq send → broker → worker consumer thread → "
        "the worker's event loop → claim transaction → input read → run(); clocks: CLOCK_MONOTONIC "
        "of the two processes on one machine",
    )


SLOW_PROVIDER_S = 0.2
"""The provider time of the second scaling run: a task that waits on something else (a remote
API, a GPU server), so that the workers' concurrency, not this machine's 2 cores, is the limit."""


async def _scaling_figure(sizes: Sizes, report: Report) -> None:
    queue = f"bench-{secrets.token_hex(4)}"
    rates: dict[int, float] = {}
    slow_rates: dict[int, float] = {}
    slow_tasks = max(4, sizes.broker_throughput_tasks // 2)
    async with _pg_database() as db_url:
        server = _scaled_server(db_url, REDIS_URL, queue, Path())
        server.env_extra["BENCH_MARKS_FILE"] = str(server.data_dir / "marks.txt")
        with server:
            token = register(server.url)
            for count in (1, 2):
                workers = Workers(server, count, 8)
                try:

                    async def go() -> tuple[float, float]:
                        await _throughput(server, token, 16, 16)  # warm-up: the workers are up
                        fast = await _throughput(server, token, sizes.broker_throughput_tasks, 16)
                        slow = await _throughput(server, token, slow_tasks, 32, SLOW_PROVIDER_S)
                        return fast, slow

                    rates[count], slow_rates[count] = await go()
                finally:
                    workers.stop()

    def measured(by_count: dict[int, float]) -> str:
        return " / ".join(f"{c} worker{'s' if c > 1 else ''}: {r:.0f} tasks/s" for c, r in by_count.items())

    report.add(
        Row(
            "3",
            "throughput scaling with worker count (PostgreSQL, Dramatiq on Redis, no-op provider)",
            measured(rates),
            "—",
            f"{rates[2] / rates[1]:.2f}× from 1 to 2 workers",
            "—",
            None,
            f"{sizes.broker_throughput_tasks} tasks over 16 keep-alive connections (raw-socket "
            "generator) to one API process; "
            "each worker process has 8 Dramatiq threads; API, workers, PostgreSQL, Redis and the load "
            "generator share the machine's 2 cores, which a no-op task saturates with one worker: "
            "a second worker on the same cores cannot add throughput (next row for one that can)",
        )
    )
    ideal = 8 / SLOW_PROVIDER_S
    report.add(
        Row(
            "3",
            f"throughput scaling with worker count, provider taking {SLOW_PROVIDER_S:.1f} s "
            "(PostgreSQL, Dramatiq on Redis)",
            measured(slow_rates),
            f"{ideal:.0f} tasks/s per worker process (8 threads ÷ {SLOW_PROVIDER_S:.1f} s)",
            f"{slow_rates[2] / slow_rates[1]:.2f}× from 1 to 2 workers",
            "—",
            None,
            f"{slow_tasks} tasks over 32 keep-alive connections to one API process; the provider waits "
            "(as on a remote API or GPU server) instead of using this machine's CPU, so each worker "
            "process's 8 concurrent tasks are the limit and a second process doubles it",
        )
    )


async def broker_figures(sizes: Sizes, report: Report, only: set[str]) -> None:
    want = lambda fig: not only or fig in only  # noqa: E731
    if want("2"):
        for broker, url in (("Redis", REDIS_URL), ("RabbitMQ", AMQP_URL)):
            try:
                await _dispatch_figure(broker, url, sizes, report)
            except Exception as exc:  # a broker that is not running: say so, measure the rest
                report.add(Row("2", f"dispatch latency with Dramatiq on {broker}", f"not measured: {exc}"))
    if want("3"):
        try:
            await _scaling_figure(sizes, report)
        except Exception as exc:
            report.add(Row("3", "throughput scaling with worker count on PostgreSQL", f"not measured: {exc}"))
