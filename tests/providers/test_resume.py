"""Resume after a worker dies, for every provider that waits on a remote job: the stored request id
is polled again by the next worker; the provider sees exactly one create; the task is charged once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from darkroom.models import Task, TaskStatus
from darkroom.tasks.jobs import TaskRunner
from tests.providers.conftest import ExternalApp, ledger, task_row
from tests.providers.fakes.comfyui import FakeComfyUI
from tests.providers.fakes.server import serve
from tests.providers.fakes.stability import KEY, FakeStability
from tests.support import photo, register, submit


async def _die_after_checkpoint(client: httpx.AsyncClient, task_id: str) -> str:
    """Run the task on worker-1 until its request id is stored, then kill it (lease left to expire)."""
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    first = asyncio.create_task(TaskRunner(ctx, "worker-1").run(task_id))
    deadline = time.monotonic() + 30
    while (stored := (await task_row(client, task_id)).ai_task_id) is None:
        assert time.monotonic() < deadline and not first.done()
        await asyncio.sleep(0.05)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    async with ctx.db.transaction() as session:
        await session.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(
                status=TaskStatus.PROCESSING,
                lease_owner="worker-1",
                lease_expires_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    return stored


async def test_comfyui_resumes_the_stored_prompt(external_app: ExternalApp) -> None:
    fake = FakeComfyUI()
    fake.script.push("outcome", "hold")
    async with serve(fake.app) as base:
        settings = {"comfyui_url": base, "default_ai_provider": "comfyui", "run_workers": False}
        async with external_app(**settings) as client:
            headers = await register(client)
            r = await submit(client, headers, "custom", [photo(40, 30)], {"prompt": "resume"})
            task_id = r.json()["data"]["id"]
            stored = await _die_after_checkpoint(client, task_id)
            assert list(fake.prompts) == [stored]
            fake.prompts[stored]["outcome"] = "ok"
            await TaskRunner(client.app.state.ctx, "worker-2").run(task_id)  # type: ignore[attr-defined]
            task = (await client.get(f"/api/tasks/{task_id}", headers=headers)).json()["data"]
            assert task["status"] == "completed", task
            assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    assert [r.path for r in fake.requests].count("/prompt") == 1
    assert [r.path for r in fake.requests].count("/upload/image") == 1


async def test_stability_resumes_the_stored_generation(external_app: ExternalApp) -> None:
    fake = FakeStability(polls_before_done=10**6)  # "in-progress" until the test says otherwise
    async with serve(fake.app) as base:
        settings = {
            "stability_api_key": KEY,
            "stability_base_url": base,
            "default_ai_provider": "stability",
            "run_workers": False,
        }
        async with external_app(**settings) as client:
            headers = await register(client)
            # an asynchronous answer ({"id": …}, polled at /v2beta/results/{id})
            fake.script.push("/v2beta/stable-image/generate/sd3", "async")
            r = await submit(client, headers, "custom", [photo(96, 64)], {"prompt": "a beach"})
            task_id = r.json()["data"]["id"]
            stored = await _die_after_checkpoint(client, task_id)
            assert list(fake.results) == [stored]
            fake.polls_before_done = 0
            await TaskRunner(client.app.state.ctx, "worker-2").run(task_id)  # type: ignore[attr-defined]
            task = (await client.get(f"/api/tasks/{task_id}", headers=headers)).json()["data"]
            assert task["status"] == "completed", task
            assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    creates = [r for r in fake.requests if r.method == "POST"]
    assert len(creates) == 1
