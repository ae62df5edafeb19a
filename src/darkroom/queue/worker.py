"""``darkroom worker``: a Dramatiq worker process that runs tasks (no HTTP).

One process = one asyncio event loop (in a thread of its own, Dramatiq's ``EventLoopThread``),
one database engine, one provider registry with its model process pool, N Dramatiq worker
threads each waiting on a ``TaskRunner.run`` coroutine on that loop, and a reaper. Every worker
process runs the reaper; on PostgreSQL its batch select is ``FOR UPDATE SKIP LOCKED``, so reapers
never hand out the same tasks at once, and a duplicate dispatch is a no-op anyway.

The context is built *before* Dramatiq starts consuming, so no message reaches an actor that has
nothing to run it with. On SIGTERM/SIGINT the runs in flight are canceled (each hands its task
back to ``pending``), then the Dramatiq worker stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread

from darkroom import migrate
from darkroom.config import Settings
from darkroom.context import AppContext
from darkroom.loops import new_event_loop
from darkroom.providers.base import Provider
from darkroom.queue.broker import DramatiqTransport, TaskIdFilter
from darkroom.queue.reaper import reaper_loop
from darkroom.tasks.jobs import TaskRunner

log = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT_MS = 15_000


class WorkerProcess:
    def __init__(
        self, settings: Settings, concurrency: int, providers: Sequence[Provider] | None = None
    ) -> None:
        """``providers`` replaces the configured ones, as in ``create_app`` (benchmarks use it)."""
        self.settings = settings
        self.concurrency = concurrency
        self.providers = providers
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.transport = DramatiqTransport(settings)
        self.loop_thread = EventLoopThread(log)
        self.loop_thread.loop.close()  # Dramatiq makes an asyncio loop; ours is uvloop's (loops.py)
        self.loop_thread.loop = new_event_loop()
        self.ctx: AppContext | None = None
        self.running: set[asyncio.Task[None]] = set()
        self.background: list[asyncio.Task[None]] = []

    # -- on the event loop ---------------------------------------------------------------------

    async def _setup(self) -> None:
        from darkroom.app import build_context  # app imports the HTTP layer; keep it lazy

        if self.settings.auto_migrate:
            await asyncio.to_thread(migrate.upgrade, self.settings.resolved_database_url)
        ctx = build_context(self.settings, self.providers)
        ctx.dispatcher = self.transport  # the reaper rings the same doorbell as the API
        runner = TaskRunner(ctx, self.worker_id)
        self.ctx = ctx

        async def handle(task_id: str) -> None:
            current = asyncio.current_task()
            assert current is not None
            self.running.add(current)
            try:
                await runner.run(task_id)
            finally:
                self.running.discard(current)

        self.transport.handler = handle
        self.background.append(
            asyncio.create_task(
                reaper_loop(ctx, grace=self.settings.redispatch_after_seconds), name="darkroom-reaper"
            )
        )

    async def _hand_back(self) -> None:
        for job in self.background:
            job.cancel()
        runs = list(self.running)
        for run in runs:  # TaskRunner.run hands a canceled task back to pending
            run.cancel()
        await asyncio.gather(*self.background, *runs, return_exceptions=True)

    async def _teardown(self) -> None:
        if self.ctx is not None:
            await self.ctx.registry.aclose()
            await self.ctx.db.dispose()

    # -- process lifecycle ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.loop_thread.start(timeout=5.0)
        set_event_loop_thread(self.loop_thread)
        worker: dramatiq.Worker | None = None
        try:
            self.loop_thread.run_coroutine(self._setup())
            worker = dramatiq.Worker(self.transport.broker, worker_threads=self.concurrency)
            worker.queue_prefetch = self.concurrency  # see queue/broker.py: no hoarding
            worker.start()
            if self.settings.metrics_port:  # this process's histograms (see darkroom/metrics.py)
                from prometheus_client import start_http_server

                from darkroom.metrics import REGISTRY

                start_http_server(self.settings.metrics_port, addr=self.settings.host, registry=REGISTRY)
            log.info(
                "worker started",
                extra={"worker_id": self.worker_id, "concurrency": self.concurrency},
            )
            while not stop.wait(0.5):
                pass
            log.info("worker stopping: handing running tasks back")
            self.loop_thread.run_coroutine(self._hand_back())
        finally:
            if worker is not None:
                worker.stop(timeout=WORKER_STOP_TIMEOUT_MS)
            try:
                self.loop_thread.run_coroutine(self._teardown())
            finally:
                self.transport.close()
                self.loop_thread.stop()  # type: ignore[no-untyped-call]
                self.loop_thread.join()
                set_event_loop_thread(None)


def run_worker(settings: Settings, concurrency: int) -> None:
    """Blocks until SIGTERM or SIGINT."""
    if not settings.broker_url:
        raise RuntimeError("set DARKROOM_BROKER_URL (redis://… or amqp://…) to run `darkroom worker`")
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for handler in logging.getLogger().handlers:
        handler.addFilter(TaskIdFilter())
    WorkerProcess(settings, concurrency).run(stop)
