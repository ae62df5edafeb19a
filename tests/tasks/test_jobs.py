"""The worker's write transactions (Core statements): claim once, finish only while held."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from darkroom.models import CreditTransaction, TaskFile
from darkroom.providers.base import OutputImage, ProviderResult, StagedOutput
from darkroom.storage import staging
from darkroom.tasks.jobs import PROGRESS_START, TaskFailure, TaskRunner
from tests import database
from tests.conftest import AppFactory
from tests.doubles import ScriptedProvider
from tests.support import photo, register, stored_events, stored_task, submit


async def _ledger(ctx: object, task_id: str) -> list[str]:
    async with ctx.db.transaction(write=False) as session:  # type: ignore[attr-defined]
        return list(
            await session.scalars(
                select(CreditTransaction.transaction_type)
                .where(CreditTransaction.task_id == task_id)
                .order_by(CreditTransaction.id)
            )
        )


async def _run_script(url: str, sql: str) -> None:
    """Several statements behind the app's back (asyncpg's simple protocol)."""
    conn = await asyncpg.connect(database.asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_concurrent_claims_take_a_task_once_and_only_the_holder_finishes(
    app_client: AppFactory,
) -> None:
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted", run_workers=False) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        headers = await register(client)
        r = await submit(client, headers, "color_enhancement", [photo(32, 32)])
        assert r.status_code == 201, r.text
        task_id = r.json()["data"]["id"]
        runners = [TaskRunner(ctx, f"w{i}") for i in range(6)]

        claims = await asyncio.gather(*(runner._claim(task_id) for runner in runners))
        won = [(runner, c) for runner, c in zip(runners, claims, strict=True) if c is not None]
        assert len(won) == 1
        holder, claim = won[0]
        assert claim.attempt == 1 and claim.user_id and claim.cost == 1
        assert [f.content_type for f in claim.inputs] == ["image/jpeg"]
        task = await stored_task(ctx, task_id)
        assert (task.status, task.lease_owner, task.claim_count, task.progress) == (
            "processing",
            holder.worker_id,
            1,
            PROGRESS_START,
        )
        events = await stored_events(ctx, task_id)
        assert [(s, p) for _, s, p in events] == [("pending", 0), ("processing", PROGRESS_START)]
        assert task.seq == events[-1][0]

        # A worker that does not hold the task (a duplicate delivery) finishes nothing: no event,
        # no output row, no settlement, and its stored output is removed again.
        other = next(r for r in runners if r is not holder)
        stranger = dataclasses.replace(claim)
        output = ProviderResult(outputs=[OutputImage(photo(8, 8, "PNG"), "image/png", 8, 8)])
        await other._finish_completed(stranger, output)
        await other._finish_failed(stranger, TaskFailure("provider_error", "no"))
        assert await stored_events(ctx, task_id) == events
        assert await _ledger(ctx, task_id) == ["reserve"]
        assert (await stored_task(ctx, task_id)).status == "processing"
        async with ctx.db.transaction(write=False) as session:
            outputs = await session.scalar(
                select(func.count()).select_from(TaskFile).where(TaskFile.role == "output")
            )
        assert outputs == 0

        # The holder completes it: one event whose id is the task's seq, charged once.
        await holder._finish_completed(claim, output)
        task = await stored_task(ctx, task_id)
        events = await stored_events(ctx, task_id)
        assert (task.status, task.progress, task.lease_owner) == ("completed", 100, None)
        assert [(s, p) for _, s, p in events][-1] == ("completed", 100)
        assert task.seq == events[-1][0]
        assert await _ledger(ctx, task_id) == ["reserve", "capture"]
        # a second delivery of the same finish is a no-op
        await holder._finish_completed(claim, output)
        assert await stored_events(ctx, task_id) == events
        assert await _ledger(ctx, task_id) == ["reserve", "capture"]
        me = (await client.get("/api/me", headers=headers)).json()["data"]
        assert me["credits"] == 19


async def test_a_failed_finish_refunds_once_and_records_the_error(app_client: AppFactory) -> None:
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted", run_workers=False) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        headers = await register(client)
        task_id = (await submit(client, headers, "color_enhancement", [photo(32, 32)])).json()["data"]["id"]
        runner = TaskRunner(ctx, "w")
        claim = await runner._claim(task_id)
        assert claim is not None
        assert await TaskRunner(ctx, "late")._claim(task_id) is None  # the lease is still valid
        await runner._finish_failed(claim, TaskFailure("content_filtered", "Refused."))
        await runner._finish_failed(claim, TaskFailure("content_filtered", "Refused."))
        task = await stored_task(ctx, task_id)
        assert (task.status, task.error_code) == ("failed", "content_filtered")
        assert task.error_message == "Refused."
        events = await stored_events(ctx, task_id)
        assert [s for _, s, _ in events] == ["pending", "processing", "failed"]
        assert task.seq == events[-1][0]
        assert await _ledger(ctx, task_id) == ["reserve", "release"]
        assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20
        shown = (await client.get(f"/api/tasks/{task_id}", headers=headers)).json()["data"]
        assert (shown["status"], shown["errorCode"]) == ("failed", "content_filtered")


async def test_outputs_are_removed_when_the_finishing_commit_itself_fails(
    app_client: AppFactory, tmp_path: Path
) -> None:
    """The commit is the last step that can fail: a PostgreSQL constraint checked only at commit
    (added behind the app's back) refuses the output rows; the stored output files go with it."""
    url = database.create_database()  # PostgreSQL in both runs: SQLite has no deferred checks
    try:
        provider = ScriptedProvider("scripted", ("color_enhancement",))
        async with app_client(
            providers=[provider], default_ai_provider="scripted", run_workers=False, database_url=url
        ) as client:
            ctx = client.app.state.ctx  # type: ignore[attr-defined]
            headers = await register(client)
            task_id = (await submit(client, headers, "color_enhancement", [photo(32, 32)])).json()["data"][
                "id"
            ]
            runner = TaskRunner(ctx, "w")
            claim = await runner._claim(task_id)
            assert claim is not None
            await _run_script(
                url,
                """
                CREATE FUNCTION refuse_outputs() RETURNS trigger LANGUAGE plpgsql AS
                  $$ BEGIN RAISE EXCEPTION 'outputs refused at commit'; END $$;
                CREATE CONSTRAINT TRIGGER refuse_outputs AFTER INSERT ON task_files
                  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.role = 'output')
                  EXECUTE FUNCTION refuse_outputs();
                """,
            )
            output = ProviderResult(outputs=[OutputImage(photo(8, 8, "PNG"), "image/png", 8, 8)])
            with pytest.raises(DBAPIError, match="outputs refused at commit"):
                await runner._finish_completed(claim, output)
            stored = [p for p in (tmp_path / "files").rglob("*") if p.is_file() and "outputs" in p.parts]
            assert stored == []
            assert (await stored_task(ctx, task_id)).status == "processing"  # nothing of the finish stayed
            assert await _ledger(ctx, task_id) == ["reserve"]
    finally:
        database.drop_database(url)


async def _claimed(client: object, kind: str = "color_enhancement") -> tuple[object, TaskRunner, object, str]:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    headers = await register(client)  # type: ignore[arg-type]
    task_id = (await submit(client, headers, kind, [photo(32, 32)])).json()["data"]["id"]  # type: ignore[arg-type]
    runner = TaskRunner(ctx, "w")
    claim = await runner._claim(task_id)
    assert claim is not None
    return ctx, runner, claim, task_id


def _staged(ctx: object, data: bytes) -> StagedOutput:
    path = staging.write_durable(ctx.storage.staging_dir, data)  # type: ignore[attr-defined]
    return StagedOutput(path, "image/png", 8, 8, len(data))


async def test_staged_outputs_are_moved_into_storage(app_client: AppFactory) -> None:
    """Outputs a provider wrote as files are stored by moving them; bytes outputs beside them as before."""
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted", run_workers=False) as client:
        ctx, runner, claim, task_id = await _claimed(client)
        first, second = photo(8, 8, "PNG"), photo(8, 8, "JPEG")
        staged = _staged(ctx, first)
        outputs = [staged, OutputImage(second, "image/jpeg", 8, 8)]
        await runner._finish_completed(claim, ProviderResult(outputs=outputs))  # type: ignore[arg-type]
        assert (await stored_task(ctx, task_id)).status == "completed"
        assert not staged.path.exists()
        async with ctx.db.transaction(write=False) as session:  # type: ignore[attr-defined]
            files = (
                await session.scalars(
                    select(TaskFile)
                    .where(TaskFile.task_id == task_id, TaskFile.role == "output")
                    .order_by(TaskFile.position)
                )
            ).all()
        assert [(f.content_type, f.size) for f in files] == [
            ("image/png", len(first)),
            ("image/jpeg", len(second)),
        ]
        assert [await ctx.storage.get(f.storage_key) for f in files] == [first, second]  # type: ignore[attr-defined]
        assert await _ledger(ctx, task_id) == ["reserve", "capture"]


async def test_a_staged_output_that_is_not_an_image_fails_the_task_and_no_file_stays(
    app_client: AppFactory, tmp_path: Path
) -> None:
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted", run_workers=False) as client:
        ctx, runner, claim, task_id = await _claimed(client)
        outputs = [
            _staged(ctx, photo(8, 8, "PNG")),
            _staged(ctx, b"not an image"),
            _staged(ctx, photo(8, 8, "PNG")),
        ]
        await runner._finish_completed(claim, ProviderResult(outputs=outputs))  # type: ignore[arg-type]
        task = await stored_task(ctx, task_id)
        assert (task.status, task.error_code) == ("failed", "provider_error")
        assert await _ledger(ctx, task_id) == ["reserve", "release"]
        assert list(ctx.storage.staging_dir.iterdir()) == []  # type: ignore[attr-defined]
        stored = [p for p in (tmp_path / "files").rglob("*") if p.is_file() and "outputs" in p.parts]
        assert stored == []
