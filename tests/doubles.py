"""Provider doubles registered per test through create_app(providers=...): they implement the
real provider contract, so everything around them (claims, leases, credits) is the real code."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping

from PIL import Image

from darkroom.providers.base import (
    OutputImage,
    ParameterSpec,
    ProgressCallback,
    ProviderError,
    ProviderRequest,
    ProviderResult,
    TaskTypeSpec,
)


class ScriptedProvider:
    """Serves the given task types. Each run pops the next step from ``script``:
    an exception instance to raise, a float to sleep before succeeding, or None to succeed at once."""

    def __init__(self, name: str, task_types: tuple[str, ...], script: list[object] | None = None) -> None:
        self.name = name
        self.task_types = task_types
        self.script = list(script or [])
        self.calls: list[ProviderRequest] = []
        self.started = asyncio.Event()

    def capabilities(self) -> Mapping[str, TaskTypeSpec]:
        params = {"note": ParameterSpec(type="string", default="")}
        return {
            t: TaskTypeSpec(task_type=t, parameters=params, min_inputs=1, max_inputs=5)
            for t in self.task_types
        }

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        self.calls.append(request)
        self.started.set()
        step = self.script.pop(0) if self.script else None
        await progress(10)
        if isinstance(step, ProviderError):
            raise step
        if isinstance(step, float | int):
            for i in range(10):
                await asyncio.sleep(float(step) / 10)
                await progress(10 + 9 * i)
        img = Image.new("RGB", (8, 6), (10, 200, 30))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        await progress(100)
        return ProviderResult(outputs=[OutputImage(buf.getvalue(), "image/png", 8, 6)], request_id="fake-1")

    async def aclose(self) -> None:
        return None
