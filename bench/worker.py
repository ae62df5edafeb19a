"""A ``darkroom worker`` whose provider registry is the bench provider (``python -m bench.worker``).

The product's :class:`~darkroom.queue.worker.WorkerProcess` with one difference: its context is
built with :class:`~bench.server.BenchProvider` instead of the configured providers (the same
``build_context(settings, providers)`` seam the bench server uses). Everything else is the
product's: Dramatiq consumer, claim, lease, result write, capture, reaper.

Each run's ``started``/``finished`` marks (``time.perf_counter``, CLOCK_MONOTONIC: comparable
across processes of one machine) are appended to ``BENCH_MARKS_FILE`` after the run, off the
measured path.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from bench.server import BenchProvider, Marks
from darkroom.config import Settings
from darkroom.providers.base import ProgressCallback, ProviderRequest, ProviderResult
from darkroom.queue.worker import WorkerProcess


class FileMarkedProvider(BenchProvider):
    def __init__(self, marks: Marks, path: Path) -> None:
        super().__init__(marks)
        self.path = path

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        result = await super().run(request, progress)
        tid = request.task_id
        with self.path.open("a") as f:
            f.write(f"{tid} {self.marks.started.pop(tid)!r} {self.marks.finished.pop(tid)!r}\n")
        return result


def main() -> None:
    from darkroom.logs import configure_logging

    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    provider = FileMarkedProvider(Marks(), Path(os.environ["BENCH_MARKS_FILE"]))
    WorkerProcess(settings, args.concurrency, providers=[provider]).run(stop)


if __name__ == "__main__":
    os.environ.setdefault("APP_ENV", "test")
    main()
