"""Stopping a worker while its task run is finishing: the stop is honoured, never swallowed.

A worker coroutine that swallowed its cancellation went back to waiting for the next task, and
the shutdown that cancelled it (``InProcessQueue.stop``) waited for it forever."""

from __future__ import annotations

import asyncio

from darkroom.tasks.jobs import TaskRunner
from tests.conftest import AppFactory
from tests.doubles import ScriptedProvider
from tests.support import register, submit


class _Gated(ScriptedProvider):
    """Succeeds once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__("scripted", ("color_enhancement",))
        self.release = asyncio.Event()

    async def run(self, request, progress):  # type: ignore[no-untyped-def]
        self.started.set()
        await self.release.wait()
        return await super().run(request, progress)


async def test_a_run_stopped_at_any_point_of_its_finish_is_stopped(app_client: AppFactory) -> None:
    provider = _Gated()
    async with app_client(providers=[provider], run_workers=False, reaper_interval_seconds=600) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        runner = TaskRunner(ctx, "test-worker")
        headers = await register(client)
        swallowed = []
        # The stop lands a few event-loop turns after the provider returns: while the run waits
        # for its lease renewer to end, or before, or after. At no point may it be lost.
        for turns in range(12):
            task_id = (await submit(client, headers, "color_enhancement")).json()["data"]["id"]
            provider.started.clear()
            provider.release.clear()
            run = asyncio.create_task(runner.run(task_id))
            await provider.started.wait()
            provider.release.set()
            for _ in range(turns):
                await asyncio.sleep(0)
            if not run.cancel():
                continue  # finished before the stop: nothing to honour
            try:
                await asyncio.wait_for(run, 30)
            except asyncio.CancelledError:
                continue
            swallowed.append(turns)
    assert swallowed == []
