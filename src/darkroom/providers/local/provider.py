"""The built-in, fully offline provider: ONNX models and Pillow filters in a process pool.

Execution model
---------------
* All image work runs in a :class:`~concurrent.futures.ProcessPoolExecutor` (``spawn`` context:
  the server has threads, so forking is unsafe). The pool is created on first use; each worker
  loads its models lazily on its first job and keeps them (see :mod:`.models`).
* Only bytes cross the process boundary: the worker decodes, runs the model and encodes. With
  the request's ``output_dir`` (the runner gives the storage's staging folder) the worker writes
  each result there and only its name comes back (:class:`~darkroom.providers.base.StagedOutput`);
  a result that is not used (a failed sibling input, a cancelled run) is removed.
* Inputs of one task are submitted together, so with ``max_workers > 1`` they run in parallel.
* ``run()`` reports progress after each finished input and, while an input runs, every ~0.5 s an
  estimate (from the pixel count) that approaches but never reaches that input's share.

Workers are started with ``spawn``, which re-imports the program's ``__main__`` module in
each worker: entry points must use the ``if __name__ == "__main__":`` idiom (console scripts,
``uvicorn`` and ``pytest`` do).

Cancellation: when the asyncio task awaiting ``run()`` is cancelled, ``run()`` stops waiting at
once and cancels inputs that have not started. An input already running in a worker process
cannot be interrupted; it finishes in the background and its result is discarded.

Failures: undecodable input -> ``InvalidInput``; a worker process that dies (e.g. killed by the
OOM killer) -> the pool is discarded (a fresh one is created on next use) and
``ProviderUnavailable`` is raised; anything else -> ``ProviderError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import math
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Final

from PIL import Image

from darkroom.imaging import DEFAULT_MAX_PIXELS, ImageRejected
from darkroom.providers.base import (
    InputImage,
    InvalidInput,
    OutputImage,
    ProgressCallback,
    ProviderError,
    ProviderRequest,
    ProviderResult,
    ProviderUnavailable,
    StagedOutput,
    TaskTypeSpec,
)
from darkroom.providers.local import models, operations
from darkroom.providers.local.specs import (
    BACKGROUND_REMOVAL,
    CAPABILITIES,
    COLOR_ENHANCEMENT,
    STYLE_TRANSFER,
)
from darkroom.providers.outputs import discard_staged

TICK_SECONDS: Final = 0.5
_MAX_PARTIAL: Final = 0.95  # an estimate never claims more than 95 % of a running input's share

# Seconds ~= base + per_megapixel * MP, fitted to measurements on a 2-core VM.
# Only used to shape the progress curve while an input is running.
_COST: Final[Mapping[str, tuple[float, float]]] = {
    BACKGROUND_REMOVAL: (0.2, 0.13),
    STYLE_TRANSFER: (0.5, 0.13),
    COLOR_ENHANCEMENT: (0.03, 0.08),
}
_COLD_START_SECONDS: Final = 1.0  # spawning a worker and loading a model, on the first job


def _pixels(data: bytes) -> int:
    """Pixel count from the image header (no decoding); a guess from the byte size if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            return int(width * height)
    except Exception:  # any header problem is reported properly by the worker
        return max(1, len(data) * 4)


def estimate_seconds(task_type: str, pixels: int) -> float:
    base, per_mp = _COST.get(task_type, (0.5, 0.2))
    return base + per_mp * pixels / 1e6


class LocalProvider:
    """Background removal, style transfer and colour enhancement, all offline on the CPU.

    ``max_workers`` worker processes, each with its own copy of the models (peak RSS ~1 GB for a
    12 MP style transfer, ~0.5 GB for background removal, which also keeps its last decode buffer,
    up to 64 MiB, between tasks), each onnxruntime session using
    ``onnx_threads`` intra-op threads (None: all cores). ``max_pixels`` caps decoded inputs (the
    upload path normally enforces it first).

    Measured on a 2-core VM, JPEG in, warm worker, including the pipe:

    ================== ============ =============================================
    operation          1 MP         12 MP (4000x3000)
    ================== ============ =============================================
    background_removal 0.3 s        0.4-0.5 s on a quiet machine, ~0.12 s of it ours (decode
                                    55 ms, cut-out + PNG encode ~40 ms on two cores), the rest the
                                    model; 1.1-1.9 s at load 4-6 (3.6 MB PNG for the bench photo:
                                    invisible pixels are 0)
    style_transfer     0.5-0.9 s    2.0 s (model at 1600x1200, scaled back up)
    style image mode   0.1 s        0.3 s
    color_enhancement  0.02-0.03 s  0.16-0.3 s (1.6-2 s with PNG in/out)
    ================== ============ =============================================
    """

    name = "local"

    def __init__(
        self,
        max_workers: int = 1,
        onnx_threads: int | None = None,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.onnx_threads = onnx_threads
        self.max_pixels = max_pixels
        self.shutdown_timeout = shutdown_timeout
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._warm = False
        self._closed = False

    # --- Provider protocol --------------------------------------------------------------------

    def capabilities(self) -> Mapping[str, TaskTypeSpec]:
        return CAPABILITIES

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        spec = CAPABILITIES.get(request.task_type)
        if spec is None:
            raise InvalidInput(f"The local provider does not support task type '{request.task_type}'.")
        count = len(request.inputs)
        if not spec.min_inputs <= count <= spec.max_inputs:
            raise InvalidInput(
                f"{request.task_type} takes {spec.min_inputs} to {spec.max_inputs} input images, got {count}."
            )
        params = {name: request.parameters.get(name, p.default) for name, p in spec.parameters.items()}
        jobs = self._jobs(request)

        await progress(0.0)
        outputs = await self._execute(request.task_type, jobs, params, progress, request.output_dir)
        try:
            await progress(100.0)
        except BaseException:  # the lease is lost (or the run cancelled): nobody stores them
            discard_staged(outputs)
            raise

        metadata: dict[str, Any] = {"provider": self.name, "task_type": request.task_type}
        model: str | None = None  # colour enhancement uses no model
        if request.task_type == BACKGROUND_REMOVAL:
            model = "u2netp"
            metadata |= {"model": model, **params}
        elif request.task_type == STYLE_TRANSFER:
            if len(request.inputs) > 1:
                model = "arbitrary_image_stylization"
                metadata |= {"model": model, "style": "image"}
            else:
                model = "multistyle26"
                metadata |= {"model": model, "style": params["style"]}
            metadata |= {"strength": params["strength"], "preserve_color": params["preserve_color"]}
        else:
            metadata |= {"enhancement": params["enhancement"], "strength": params["strength"]}
        return ProviderResult(outputs=outputs, metadata=metadata, model=model)

    async def aclose(self) -> None:
        """Shut the pool down: queued work is cancelled; running work gets ``shutdown_timeout``
        seconds to finish, then its process is terminated."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await _shutdown_pool(pool, self.shutdown_timeout)

    # --- extras ---------------------------------------------------------------------------------

    async def warm_up(self) -> float:
        """Start the workers and load all models now instead of on the first task.

        Returns the seconds it took (measured ~1-2 s: process spawn + imports + model load).
        """
        start = time.perf_counter()
        pool = self._get_pool()
        futures = [asyncio.wrap_future(pool.submit(models.warm_up)) for _ in range(self.max_workers)]
        try:
            await asyncio.gather(*futures)
        except BrokenProcessPool:
            self._discard_pool(pool)
            raise ProviderUnavailable(
                "The local provider's worker process died while loading models."
            ) from None
        self._warm = True
        return time.perf_counter() - start

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _jobs(request: ProviderRequest) -> list[tuple[InputImage, bytes | None]]:
        """(input, extra input) per unit of work: one per image, except style transfer with a
        style image, which is one job for the pair."""
        if request.task_type == STYLE_TRANSFER:
            style = request.inputs[1].data if len(request.inputs) > 1 else None
            return [(request.inputs[0], style)]
        return [(image, None) for image in request.inputs]

    def _get_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._closed:
            raise ProviderUnavailable("The local provider has been shut down.")
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.max_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=models.configure,
                initargs=(self.onnx_threads, os.getpid()),
            )
            self._warm = False
        return self._pool

    def _discard_pool(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    async def _execute(
        self,
        task_type: str,
        jobs: Sequence[tuple[InputImage, bytes | None]],
        params: dict[str, Any],
        progress: ProgressCallback,
        output_dir: Path | None,
    ) -> list[OutputImage | StagedOutput]:
        pool = self._get_pool()
        estimates = [estimate_seconds(task_type, _pixels(image.data)) for image, _ in jobs]
        if not self._warm:
            estimates[0] += _COLD_START_SECONDS
        try:
            cfutures = [
                pool.submit(
                    operations.run_operation,
                    task_type,
                    image.data if image.path is None else image.path,
                    params,
                    max_pixels=self.max_pixels,
                    extra_input=extra,
                    output_dir=output_dir,
                )
                for image, extra in jobs
            ]
        except BrokenProcessPool:
            self._discard_pool(pool)
            raise ProviderUnavailable(
                "The local provider's worker pool had failed; it will be restarted."
            ) from None
        except RuntimeError as exc:  # submit after shutdown (aclose raced with us)
            raise ProviderUnavailable(f"The local provider is not accepting work: {exc}") from None

        index_of = {asyncio.wrap_future(cf): i for i, cf in enumerate(cfutures)}
        results: list[OutputImage | StagedOutput | None] = [None] * len(jobs)
        pending = set(index_of)
        loop = asyncio.get_running_loop()
        segment_start = loop.time()
        reported = 0.0
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=TICK_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in done:
                    i = index_of[fut]
                    results[i] = self._result(fut, i, len(jobs), pool)
                if done:
                    self._warm = True
                    segment_start = loop.time()
                if not pending:
                    break  # run() reports 100 once the results are in
                finished = len(jobs) - len(pending)
                next_estimate = min(estimates[index_of[f]] for f in pending)
                elapsed = loop.time() - segment_start
                partial = min(_MAX_PARTIAL, 1.0 - math.exp(-elapsed / max(next_estimate, 0.05)))
                value = round(100.0 * (finished + partial) / len(jobs), 1)
                if value > reported:
                    reported = value
                    await progress(value)
        except BaseException:
            # stop queued inputs of this task (on error or cancellation); running ones cannot
            # stop: the files of theirs, and of the inputs already done, are not kept
            for cf in cfutures:
                if not cf.cancel():
                    cf.add_done_callback(_discard_staged)
            raise
        return [r for r in results if r is not None]

    def _result(
        self,
        fut: asyncio.Future[OutputImage | StagedOutput],
        index: int,
        total: int,
        pool: concurrent.futures.ProcessPoolExecutor,
    ) -> OutputImage | StagedOutput:
        where = f"Input {index + 1}: " if total > 1 else ""
        if fut.cancelled():
            raise ProviderUnavailable("The local provider was shut down while the task was running.")
        exc = fut.exception()
        if exc is None:
            return fut.result()
        if isinstance(exc, ImageRejected):
            raise InvalidInput(f"{where}{exc.message}") from None
        if isinstance(exc, operations.OperationInputError):
            raise InvalidInput(f"{where}{exc}") from None
        if isinstance(exc, BrokenProcessPool):
            self._discard_pool(pool)
            raise ProviderUnavailable(
                "The local provider's worker process died (possibly out of memory); it will be restarted."
            ) from None
        if isinstance(exc, MemoryError):
            raise ProviderUnavailable(f"{where}The local provider ran out of memory.") from None
        raise ProviderError(f"{where}Local processing failed: {type(exc).__name__}: {exc}") from exc


def _discard_staged(future: concurrent.futures.Future[OutputImage | StagedOutput]) -> None:
    """Remove the file of a finished input whose result is not used (a done callback)."""
    if not future.cancelled() and future.exception() is None:
        discard_staged([future.result()])


async def _shutdown_pool(pool: concurrent.futures.ProcessPoolExecutor, grace: float) -> None:
    # ProcessPoolExecutor has no public way to reach its processes before Python 3.14
    running: Mapping[int, Any] = getattr(pool, "_processes", None) or {}
    processes = list(running.values())
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for proc in processes:
        remaining = max(0.0, deadline - time.monotonic())
        await asyncio.to_thread(proc.join, remaining)
    for proc in processes:
        if proc.is_alive():
            with contextlib.suppress(Exception):
                proc.terminate()
            await asyncio.to_thread(proc.join, 1.0)
