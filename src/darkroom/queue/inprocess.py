"""The embedded transport: an asyncio queue and N worker coroutines in the server process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)


class InProcessQueue:
    def __init__(self, handler: Callable[[str], Awaitable[None]], concurrency: int) -> None:
        self._handler = handler
        self._concurrency = concurrency
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()  # a task id waits in the queue at most once
        self._workers: list[asyncio.Task[None]] = []

    async def dispatch(self, task_ids: Sequence[str]) -> None:
        for task_id in task_ids:
            if task_id not in self._queued:
                self._queued.add(task_id)
                self._queue.put_nowait(task_id)

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._worker(), name=f"darkroom-worker-{i}") for i in range(self._concurrency)
        ]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def _worker(self) -> None:
        while True:
            task_id = await self._queue.get()
            self._queued.discard(task_id)
            try:
                await self._handler(task_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # the reaper will bring the task back; keep this worker alive
                log.exception("task run failed", extra={"task_id": task_id})
