"""The server the benchmarks talk to: the real app (``create_app``) with a benchmark provider.

Started as its own process (``python -m bench.server --port P``) and driven over loopback HTTP.
Everything around the provider is the product's code: auth, upload checks, the write
transaction with the credit reservation, the after-commit dispatch, the in-process queue, the
claim, the lease, the result write and the capture.

Instrumentation (read by the harness from ``GET /bench/marks``):

* ``committed``: the time the after-commit hook rings the dispatcher, i.e. right after the
  transaction that created the task committed (the dispatcher is wrapped; nothing else changes).
* ``started``: the time the provider's ``run()`` is entered (the worker has claimed the task).
* ``finished``: the time ``run()`` returns.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from PIL import Image

from darkroom.config import Settings
from darkroom.context import Dispatcher
from darkroom.providers.base import (
    OutputImage,
    ParameterSpec,
    ProgressCallback,
    ProviderRequest,
    ProviderResult,
    TaskTypeSpec,
)

TASK_TYPE = "color_enhancement"  # a priced task type that the bench provider takes over
PROGRESS_EVERY = 0.5  # seconds between progress reports of a provider with a delay


class Marks:
    def __init__(self) -> None:
        self.committed: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}

    def dump(self) -> list[dict[str, Any]]:
        return [
            {
                "task": tid,
                "committed": self.committed.get(tid),
                "started": self.started.get(tid),
                "finished": self.finished.get(tid),
            }
            for tid in self.committed
        ]

    def clear(self) -> None:
        self.committed.clear()
        self.started.clear()
        self.finished.clear()


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


class BenchProvider:
    """``delay`` = 0: a no-op that returns a tiny PNG at once. ``delay`` > 0: takes exactly that
    many seconds (reporting progress every 0.5 s inside them), then returns the tiny PNG."""

    name = "bench"

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self.output = _tiny_png()

    def capabilities(self) -> Mapping[str, TaskTypeSpec]:
        params = {"delay": ParameterSpec(type="number", default=0.0, minimum=0.0, maximum=60.0)}
        return {TASK_TYPE: TaskTypeSpec(task_type=TASK_TYPE, parameters=params, min_inputs=1, max_inputs=5)}

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        start = time.perf_counter()
        self.marks.started[request.task_id] = start
        delay = float(request.parameters.get("delay") or 0.0)
        if delay > 0:
            deadline = start + delay
            step = 0
            while (left := deadline - time.perf_counter()) > 0:
                await asyncio.sleep(min(left, PROGRESS_EVERY))
                step += 1
                if deadline - time.perf_counter() > 0:
                    await progress(min(99.0, 100.0 * step * PROGRESS_EVERY / delay))
        self.marks.finished[request.task_id] = time.perf_counter()
        return ProviderResult(outputs=[OutputImage(self.output, "image/png", 8, 6)])

    async def aclose(self) -> None:
        return None


class TimedDispatcher:
    """Records when each task's doorbell rings (right after its commit), then rings it."""

    def __init__(self, inner: Dispatcher, marks: Marks) -> None:
        self.inner = inner
        self.marks = marks

    async def dispatch(self, task_ids: Sequence[str]) -> None:
        now = time.perf_counter()
        for tid in task_ids:
            self.marks.committed.setdefault(tid, now)
        await self.inner.dispatch(task_ids)


class WritePoolUse:
    """How long the SQLite write connection is checked out (held by a write transaction)."""

    def __init__(self) -> None:
        self.held = 0.0
        self.checkouts = 0
        self.since: float | None = None


def _watch_write_pool(db: Any, use: WritePoolUse) -> None:
    if db.write_engine is db.engine:  # not SQLite (or a build without a separate write pool)
        return
    from sqlalchemy import event

    pool = db.write_engine.sync_engine.pool

    @event.listens_for(pool, "checkout")
    def _out(*_: Any) -> None:
        use.checkouts += 1
        use.since = time.perf_counter()

    @event.listens_for(pool, "checkin")
    def _in(*_: Any) -> None:
        if use.since is not None:
            use.held += time.perf_counter() - use.since
            use.since = None


def build_app(settings: Settings) -> FastAPI:
    from darkroom.app import create_app

    marks = Marks()
    writes = WritePoolUse()
    app = create_app(settings, providers=[BenchProvider(marks)])
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            ctx = a.state.ctx
            ctx.dispatcher = TimedDispatcher(ctx.dispatcher, marks)
            _watch_write_pool(ctx.db, writes)
            yield state

    app.router.lifespan_context = lifespan

    @app.get("/bench/marks", include_in_schema=False)
    async def get_marks(clear: bool = False) -> list[dict[str, Any]]:
        out = marks.dump()
        if clear:
            marks.clear()
        return out

    @app.get("/bench/write-pool", include_in_schema=False)
    async def get_write_pool() -> dict[str, float]:
        return {"held_seconds": writes.held, "checkouts": writes.checkouts}

    @app.post("/bench/gc", include_in_schema=False)
    async def collect_garbage() -> dict[str, int]:
        """A full collection, asked for between measured windows (figure 6): one that the heap's
        growth over many rounds triggers (50-80 ms here) would otherwise land in a random round."""
        return {"collected": gc.collect()}

    @app.get("/bench/trivial", include_in_schema=False)
    async def trivial() -> dict[str, Any]:
        return {"success": True, "data": None}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    from darkroom.heap import freeze_startup_objects
    from darkroom.logs import configure_logging

    configure_logging(settings.log_level)
    app = build_app(settings)
    freeze_startup_objects()  # as `darkroom serve` does
    # the same uvicorn options as `darkroom serve`
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    os.environ.setdefault("APP_ENV", "test")
    main()
