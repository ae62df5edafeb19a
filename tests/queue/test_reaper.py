"""Lost doorbells, expired leases and duplicate deliveries: delayed, never lost, charged once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from darkroom.context import AppContext
from darkroom.models import CreditTransaction, Task
from darkroom.tasks.jobs import TaskRunner
from tests.doubles import ScriptedProvider
from tests.support import photo, register, submit, wait_for


class LostDoorbell:
    """A dispatcher that drops every message, like a broker that lost them."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    async def dispatch(self, task_ids: list[str]) -> None:
        self.dropped.extend(task_ids)


async def test_reaper_runs_tasks_whose_dispatch_was_lost(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted") as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        real, lost = ctx.dispatcher, LostDoorbell()
        ctx.dispatcher = lost
        headers = await register(client)
        task_id = (await submit(client, headers, "color_enhancement", [photo(32, 32)])).json()["data"]["id"]
        assert lost.dropped == [task_id]
        ctx.dispatcher = real
        from darkroom.queue.reaper import reap

        assert await reap(ctx, grace=0) == [task_id]
        assert (await wait_for(client, headers, task_id))["status"] == "completed"


async def _abandoned_by_dead_worker(ctx: AppContext, task_id: str, *, claims: int) -> None:
    """As if a worker claimed the task ``claims`` times and died: processing, lease expired."""
    async with ctx.db.transaction() as session:
        await session.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(
                status="processing",
                lease_owner="dead-worker",
                claim_count=claims,
                lease_expires_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )


async def test_expired_lease_is_taken_over_and_charged_once(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted", run_workers=False) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        headers = await register(client)
        task_id = (await submit(client, headers, "color_enhancement", [photo(32, 32)])).json()["data"]["id"]
        await _abandoned_by_dead_worker(ctx, task_id, claims=1)
        runner = TaskRunner(ctx, "worker-b")
        await runner.run(task_id)
        await runner.run(task_id)  # a duplicate delivery: a no-op
        await TaskRunner(ctx, "worker-c").run(task_id)
        task = await wait_for(client, headers, task_id)
        assert task["status"] == "completed"
        assert len(provider.calls) == 1
        async with ctx.db.transaction(write=False) as session:
            kinds = list(
                await session.scalars(
                    select(CreditTransaction.transaction_type)
                    .where(CreditTransaction.task_id == task_id)
                    .order_by(CreditTransaction.id)
                )
            )
        assert kinds == ["reserve", "capture"]


async def test_a_task_that_keeps_killing_workers_is_given_up(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(
        providers=[provider], default_ai_provider="scripted", run_workers=False, max_claims=3
    ) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        headers = await register(client)
        task_id = (await submit(client, headers, "color_enhancement", [photo(32, 32)])).json()["data"]["id"]
        await _abandoned_by_dead_worker(ctx, task_id, claims=3)
        await TaskRunner(ctx, "w").run(task_id)
        task = await wait_for(client, headers, task_id)
        assert task["status"] == "failed" and task["errorCode"] == "worker_lost"
        assert provider.calls == []
        assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20


async def test_settlement_is_unique_per_attempt_in_the_database(app_client) -> None:  # type: ignore[no-untyped-def]
    import pytest
    from sqlalchemy.exc import IntegrityError

    from darkroom.credits import service as credits

    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted") as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        headers = await register(client)
        task = (await submit(client, headers, "color_enhancement", [photo(32, 32)])).json()["data"]
        await wait_for(client, headers, task["id"])
        user_id = (await client.get("/api/me", headers=headers)).json()["data"]["user"]["id"]
        with pytest.raises(IntegrityError):
            async with ctx.db.transaction() as session:
                await credits.release(session, user_id, task["id"], 1, 1, task["taskNo"], "double")
        async with ctx.db.transaction(write=False) as session:
            n = await session.scalar(select(func.count()).where(CreditTransaction.task_id == task["id"]))
        assert n == 2
