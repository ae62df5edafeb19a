"""What happens between a task's creation and its provider starting: the claim and nothing else."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, func, select

from darkroom.models import Task, TaskAttempt, TaskEvent
from darkroom.providers.base import ProgressCallback, ProviderRequest, ProviderResult
from darkroom.tasks.jobs import PROGRESS_START
from tests.conftest import AppFactory
from tests.doubles import ScriptedProvider
from tests.support import photo, register, submit, wait_for


class SeesItsTask(ScriptedProvider):
    """Reads the task's row and events from the database at the moment run() is entered."""

    def __init__(self, app_client_ref: list[object]) -> None:
        super().__init__("seer", ("color_enhancement",))
        self.app_ref = app_client_ref
        self.seen: tuple[str, int, list[str]] | None = None
        self.claim: dict[str, object] = {}

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
            attempt = await session.scalar(
                select(TaskAttempt).where(TaskAttempt.task_id == task.id, TaskAttempt.attempt == task.attempt)
            )
            last_event = await session.scalar(
                select(func.max(TaskEvent.id)).where(TaskEvent.task_id == task.id)
            )
            assert attempt is not None
            self.claim = {
                "attempt": (attempt.status, attempt.started_at is not None),
                "seq is the last event": task.seq == last_event,
                "lease": (task.lease_owner is not None, task.lease_expires_at is not None, task.claim_count),
                "inputs": [(f.content_type, f.name) for f in request.inputs],
            }
        return await super().run(request, progress)


async def test_claim_alone_leads_to_the_provider(app_client: AppFactory) -> None:
    ref: list[object] = []
    provider = SeesItsTask(ref)
    async with app_client(providers=[provider]) as client:
        ref.append(client.app)  # type: ignore[attr-defined]
        db = client.app.state.ctx.db  # type: ignore[attr-defined]
        # every query the driver sends (PostgreSQL: asyncpg's query logger; the claim bypasses
        # SQLAlchemy's execution events there), and where each checkout of a connection begins
        sent: list[tuple[int, str]] = []
        if not db.is_sqlite:

            def _logged(query: Any) -> None:
                sent.append((id(query.conn_params), query.query))

            @event.listens_for(db.engine.sync_engine.pool, "checkout")
            def _checkout(dbapi_connection: Any, *_: Any) -> None:
                driver = dbapi_connection.driver_connection
                driver.add_query_logger(_logged)
                sent.append((id(driver._params), "-- checkout"))

        headers = await register(client)
        r = await submit(
            client, headers, "color_enhancement", names=["one.jpg", "two.jpg"], images=[photo(), photo()]
        )
        assert r.status_code == 201, r.text
        done = await wait_for(client, headers, r.json()["data"]["id"])
        assert done["status"] == "completed"
    # created, then claimed (which already shows the start progress); no extra progress write
    assert provider.seen == ("processing", PROGRESS_START, ["status", "status"])
    assert provider.claim == {
        "attempt": ("processing", True),
        "seq is the last event": True,
        "lease": (True, True, 1),
        "inputs": [("image/jpeg", "one.jpg"), ("image/jpeg", "two.jpg")],
    }
    if not db.is_sqlite:
        # the claim (task, attempt, event, inputs) is one statement there, sent as its own
        # transaction: no BEGIN before it and no COMMIT after it on its connection
        at = [i for i, (_, q) in enumerate(sent) if q.lstrip().startswith("WITH claimed")]
        assert len(at) == 1
        conn = sent[at[0]][0]
        same = [q.strip().rstrip(";").upper() for c, q in sent if c == conn]
        mine = same.index(sent[at[0]][1].strip().rstrip(";").upper())
        before = same[:mine][::-1]
        before = before[: before.index("-- CHECKOUT")]
        after = same[mine + 1 :]
        after = after[: after.index("-- CHECKOUT")] if "-- CHECKOUT" in after else after
        assert not [q for q in before + after if q.startswith(("BEGIN", "COMMIT"))]
