"""What happens between a task's creation and its provider starting: the claim and nothing else."""

from __future__ import annotations

from sqlalchemy import select

from darkroom.models import Task, TaskEvent
from darkroom.providers.base import ProgressCallback, ProviderRequest, ProviderResult
from darkroom.tasks.jobs import PROGRESS_START
from tests.conftest import AppFactory
from tests.doubles import ScriptedProvider
from tests.support import register, submit, wait_for


class SeesItsTask(ScriptedProvider):
    """Reads the task's row and events from the database at the moment run() is entered."""

    def __init__(self, app_client_ref: list[object]) -> None:
        super().__init__("seer", ("color_enhancement",))
        self.app_ref = app_client_ref
        self.seen: tuple[str, int, list[str]] | None = None

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        ctx = self.app_ref[0].state.ctx  # type: ignore[attr-defined]
        async with ctx.db.transaction(write=False) as session:
            task = await session.get(Task, request.task_id)
            assert task is not None
            kinds = list(
                await session.scalars(
                    select(TaskEvent.kind).where(TaskEvent.task_id == task.id).order_by(TaskEvent.id)
                )
            )
            self.seen = (task.status, task.progress, kinds)
        return await super().run(request, progress)


async def test_claim_alone_leads_to_the_provider(app_client: AppFactory) -> None:
    ref: list[object] = []
    provider = SeesItsTask(ref)
    async with app_client(providers=[provider]) as client:
        ref.append(client.app)  # type: ignore[attr-defined]
        headers = await register(client)
        r = await submit(client, headers, "color_enhancement")
        assert r.status_code == 201, r.text
        done = await wait_for(client, headers, r.json()["data"]["id"])
        assert done["status"] == "completed"
    # created, then claimed (which already shows the start progress); no extra progress write
    assert provider.seen == ("processing", PROGRESS_START, ["status", "status"])
