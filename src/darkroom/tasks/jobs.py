"""Worker entry point for one task: claim → run the provider → store → settle.

* Claim is conditional (pending, or processing with an expired lease) and takes a lease that a
  background loop renews. Losing the lease (the user canceled, or another worker took over after
  we stalled) stops the provider run.
* Finishing is one transaction and a conditional transition: only the lease holder of the
  current attempt can complete or fail it, so a duplicate delivery or a late worker is a no-op.
* The provider's request id is written on the task (``remember``, under the lease-holder
  condition) before the provider waits for the result; a worker that claims the task again after
  a crash passes it back (``resume_id``) so the provider resumes instead of paying twice.
* Fallback: when a provider fails with ``rate_limited``, ``provider_unavailable`` or ``timeout``
  (after its own retries) the next provider of the task type's chain serves the same attempt —
  one reservation, charged once. The task records the provider that served it.
* When the lease is lost because the user canceled, the provider is asked to cancel the remote
  work (Replicate cancel, ComfyUI interrupt) where it supports it.
* A task claimed ``max_claims`` times without finishing (it keeps killing its worker) fails
  with ``worker_lost`` and is refunded, instead of looping forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from darkroom import metrics
from darkroom.context import AppContext
from darkroom.credits import service as credits
from darkroom.db import DriverStatement, Transaction, execute
from darkroom.models import Task, TaskAttempt, TaskStatus, tables
from darkroom.models.base import new_id
from darkroom.providers.base import (
    FAILOVER_CODES,
    Provider,
    ProviderError,
    ProviderRequest,
    ProviderResult,
)
from darkroom.providers.inputs import load_input
from darkroom.providers.outputs import discard_staged, store_output
from darkroom.storage.base import ObjectNotFound
from darkroom.tasks.events import (
    changed,
    close_attempt,
    end_attempt,
    insert_event,
    next_event_id,
    notify_committed,
    record,
    touch,
)

log = logging.getLogger(__name__)

PROGRESS_START = 5  # claimed, inputs loading
PROGRESS_END = 95  # provider done, storing results
PROGRESS_MIN_INTERVAL = 0.25  # seconds between progress writes


@dataclass(frozen=True)
class InputFile:
    storage_key: str
    content_type: str
    original_name: str | None


@dataclass(frozen=True)
class Claim:
    task_id: str
    user_id: str
    task_no: str
    attempt: int
    task_type: str
    provider: str
    parameters: dict[str, object]
    prompt: str | None
    cost: int
    inputs: list[InputFile]
    ai_task_id: str | None = None


def _claim_of(task_id: str, row: Mapping[Any, Any], inputs: list[InputFile]) -> Claim:
    return Claim(
        task_id=task_id,
        user_id=row["user_id"],
        task_no=row["task_no"],
        attempt=row["attempt"],
        task_type=row["task_type"],
        provider=row["ai_provider"],
        parameters=dict(row["input_parameters"]),
        prompt=row["prompt"],
        cost=row["cost"],
        inputs=inputs,
        ai_task_id=row["ai_task_id"],
    )


@dataclass
class Live:
    """What the running attempt talks to right now (for a provider-side cancel)."""

    provider: Provider | None = None
    request_id: str | None = None


# The hot statements, built once (a reused statement object keeps its memoized cache key: no
# construction and no cache-key traversal per execution). ``b_*`` are the bound values.
_t, _a, _f = tables.tasks, tables.task_attempts, tables.task_files
_NOW = bindparam("b_now", type_=_t.c.updated_at.type)
_CLAIMABLE = (_t.c.id == bindparam("b_task_id")) & (
    (_t.c.status == TaskStatus.PENDING)
    | (
        (_t.c.status == TaskStatus.PROCESSING)
        & (_t.c.lease_expires_at.is_(None) | (_t.c.lease_expires_at < _NOW))
    )
)
# what a claim reads of the task (``_claim_of``)
_CLAIMED = (
    _t.c.user_id,
    _t.c.task_no,
    _t.c.attempt,
    _t.c.task_type,
    _t.c.ai_provider,
    _t.c.input_parameters,
    _t.c.prompt,
    _t.c.cost,
    _t.c.ai_task_id,
)
_CLAIM = DriverStatement(  # SQLite (PostgreSQL: ``_CLAIM_PG``)
    update(_t)
    .where(_CLAIMABLE, _t.c.claim_count < bindparam("b_max_claims"))
    .values(
        status=TaskStatus.PROCESSING,
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_expires", type_=_t.c.lease_expires_at.type),
        claim_count=_t.c.claim_count + 1,
        started_at=func.coalesce(_t.c.started_at, _NOW),
        # the claim itself records the start progress: one write transaction less between the
        # commit that created the task and the provider starting (bench figure 2)
        progress=case((_t.c.progress > PROGRESS_START, _t.c.progress), else_=PROGRESS_START),
        updated_at=_NOW,
        seq=next_event_id("sqlite"),  # the id of the event the claim inserts next
    )
    .returning(*_CLAIMED, _t.c.progress, _t.c.seq)
)
# PostgreSQL: the whole claim in one statement, one round trip instead of five (bench figure 2:
# each was 0.3-2 ms there). The task's UPDATE is the same conditional one as ``_CLAIM`` (it waits
# for the row lock and re-checks its condition, so of concurrent claimers one wins) and takes
# the event's id from the events' sequence for ``seq``; the attempt's UPDATE and the event's
# INSERT ride in the same statement; the rows are the claim joined with its inputs (one row with
# NULL file columns for a task without inputs, none when the task was not claimable).
# ``set_config('synchronous_commit', 'off', true)``: this transaction's commit does not wait for
# the WAL flush (1.5 ms median fdatasync here). Safe for a claim: WAL is replayed in order, so a
# later durable commit (the finish, with its credits) flushes the claim too; a crash of the
# server within the flush delay can only lose the claim itself, and the task is then claimed
# and run again (as after a killed worker), never charged twice: the finish requires the claim.
_CLAIM_PG = DriverStatement(
    text(
        """
WITH claimed AS (
    UPDATE ai_tasks SET
        status = 'processing',
        lease_owner = :b_owner,
        lease_expires_at = :b_expires,
        claim_count = claim_count + 1,
        started_at = coalesce(started_at, :b_now),
        progress = greatest(progress, :b_start),
        updated_at = :b_now,
        seq = nextval(pg_get_serial_sequence('task_events', 'id'))
    WHERE id = :b_task_id
      AND claim_count < :b_max_claims
      AND (status = 'pending'
           OR (status = 'processing' AND (lease_expires_at IS NULL OR lease_expires_at < :b_now)))
    RETURNING id, user_id, task_no, attempt, task_type, ai_provider, input_parameters, prompt,
              cost, ai_task_id, progress, seq
), started AS (
    UPDATE task_attempts SET status = 'processing', started_at = coalesce(task_attempts.started_at, :b_now)
    FROM claimed
    WHERE task_attempts.task_id = claimed.id AND task_attempts.attempt = claimed.attempt
), event AS (
    INSERT INTO task_events (id, task_id, user_id, kind, status, progress, created_at)
    SELECT seq, id, user_id, 'status', 'processing', progress, :b_now FROM claimed
)
SELECT claimed.user_id, claimed.task_no, claimed.attempt, claimed.task_type, claimed.ai_provider,
       claimed.input_parameters, claimed.prompt, claimed.cost, claimed.ai_task_id,
       f.storage_key, f.content_type, f.original_name,
       set_config('synchronous_commit', 'off', true) AS async_commit
FROM claimed
LEFT JOIN task_files AS f ON f.task_id = claimed.id AND f.role = 'input'
ORDER BY f.position
"""
    )
    # typed so that aware datetimes are bound as the columns store them (rows come from asyncpg)
    .bindparams(
        bindparam("b_now", type_=_t.c.updated_at.type),
        bindparam("b_expires", type_=_t.c.lease_expires_at.type),
    )
)
_START_ATTEMPT = DriverStatement(  # one UPDATE, no read of the attempt row first
    update(_a)
    .where(_a.c.task_id == bindparam("b_task_id"), _a.c.attempt == bindparam("b_attempt"))
    .values(status="processing", started_at=func.coalesce(_a.c.started_at, _NOW))
)
_INPUTS = DriverStatement(
    select(_f.c.storage_key, _f.c.content_type, _f.c.original_name)
    .where(_f.c.task_id == bindparam("b_task_id"), _f.c.role == "input")
    .order_by(_f.c.position)
)
_HELD = (
    (_t.c.id == bindparam("b_task_id"))
    & (_t.c.status == TaskStatus.PROCESSING)
    & (_t.c.lease_owner == bindparam("b_owner"))
    & (_t.c.attempt == bindparam("b_attempt"))
)
_COMPLETE = DriverStatement(
    update(_t)
    .where(_HELD)
    .values(
        status=TaskStatus.COMPLETED,
        progress=100,
        completed_at=_NOW,
        updated_at=_NOW,
        lease_owner=None,
        lease_expires_at=None,
        error_code=None,
        error_message=None,
        ai_task_id=func.coalesce(bindparam("b_request_id", type_=_t.c.ai_task_id.type), _t.c.ai_task_id),
        ai_model=func.coalesce(bindparam("b_model", type_=_t.c.ai_model.type), _t.c.ai_model),
        result_metadata=bindparam("b_metadata", type_=_t.c.result_metadata.type),
        seq=bindparam("b_seq"),
    )
    .returning(_t.c.id)
)
_FAIL = DriverStatement(
    update(_t)
    .where(_HELD)
    .values(
        status=TaskStatus.FAILED,
        error_code=bindparam("b_error_code"),
        error_message=bindparam("b_error_message"),
        completed_at=_NOW,
        updated_at=_NOW,
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(_t.c.progress)
)
_INSERT_OUTPUTS = DriverStatement(insert(_f))


class LeaseLost(Exception):
    pass


class _NotHeld(Exception):
    """Raised inside a finishing transaction to roll it back: we no longer hold the task."""


class TaskFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TaskRunner:
    def __init__(self, ctx: AppContext, worker_id: str) -> None:
        self.ctx = ctx
        self.worker_id = worker_id

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.ctx.settings.task_lease_seconds)

    async def run(self, task_id: str) -> None:
        claim = await self._claim(task_id)
        if claim is None:
            return
        log.info("task claimed", extra={"task_id": task_id, "attempt": claim.attempt})
        claimed_at = time.perf_counter()
        live = Live()
        work = asyncio.create_task(self._work(claim, live))
        renewer = asyncio.create_task(self._renew(claim, work))
        try:
            outcome = await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # Stopped from outside (shutdown): hand the task back so the next start runs it.
                await self._unclaim(claim)
                raise
            log.info("lease lost (canceled or taken over); stopping", extra={"task_id": task_id})
            await self._cancel_remote(claim, live)
            return
        finally:
            renewer.cancel()
            # wait() does not raise the renewer's CancelledError, so a stop of this run that
            # lands meanwhile is raised, never swallowed (a swallowed stop left the worker
            # waiting for its next task and the shutdown waiting for it)
            await asyncio.wait([renewer])
        if isinstance(outcome, TaskFailure):
            await self._finish_failed(claim, outcome)
        else:
            await self._finish_completed(claim, outcome)
        metrics.TASK_DURATION.labels(
            claim.task_type, "failed" if isinstance(outcome, TaskFailure) else "completed"
        ).observe(time.perf_counter() - claimed_at)

    # -- claim / lease ------------------------------------------------------------------------

    async def _claim(self, task_id: str) -> Claim | None:
        """One conditional UPDATE … RETURNING takes the task (on PostgreSQL it waits for the row
        lock like the SELECT … FOR UPDATE it replaces and re-checks the condition on the row it
        gets, so of two workers only one claims); then the attempt, the event and the inputs (on
        PostgreSQL all in the same statement, ``_CLAIM_PG``)."""
        now = datetime.now(UTC)
        params = {
            "b_task_id": task_id,
            "b_now": now,
            "b_max_claims": self.ctx.settings.max_claims,
            "b_owner": self.worker_id,
            "b_expires": now + self.lease,
        }
        if self.ctx.db.is_sqlite:
            async with self.ctx.db.core_transaction() as session:
                claim = await self._take_sqlite(session, params)
        else:
            claim = await self._take_postgres(params)
        if claim is None:  # not claimable, or claimed too often: the rare path
            async with self.ctx.db.transaction() as session:
                await self._give_up_if_claimed_too_often(session, task_id, now)
        return claim

    async def _take_postgres(self, params: dict[str, Any]) -> Claim | None:
        """``_CLAIM_PG`` on an autocommit connection: the statement is its own transaction, so no
        ``BEGIN`` and ``COMMIT`` round trips around it (bench figure 2)."""
        rows = await self.ctx.db.fetch_autocommit(_CLAIM_PG, {**params, "b_start": PROGRESS_START})
        if not rows:
            return None
        task_id = str(params["b_task_id"])
        first = rows[0]
        notify_committed(self.ctx.db.session_info, {first["user_id"]})
        files = [r for r in rows if r["storage_key"] is not None]  # NULLs: a task without inputs
        inputs = [InputFile(r["storage_key"], r["content_type"], r["original_name"]) for r in files]
        return _claim_of(task_id, first, inputs)

    async def _take_sqlite(self, session: Transaction, params: dict[str, Any]) -> Claim | None:
        claimed = (await execute(session, _CLAIM, params)).one_or_none()
        if claimed is None:
            return None
        task_id = str(params["b_task_id"])
        await execute(
            session,
            _START_ATTEMPT,
            {"b_task_id": task_id, "b_attempt": claimed.attempt, "b_now": params["b_now"]},
        )
        await insert_event(
            session, task_id, claimed.user_id, TaskStatus.PROCESSING, claimed.progress, event_id=claimed.seq
        )
        changed(session, task_id, claimed.user_id)
        inputs = [
            InputFile(key, content_type, name)
            for key, content_type, name in await execute(session, _INPUTS, {"b_task_id": task_id})
        ]
        return _claim_of(task_id, claimed._asdict(), inputs)

    async def _give_up_if_claimed_too_often(self, session: AsyncSession, task_id: str, now: datetime) -> None:
        task = await session.scalar(
            select(Task).where(_CLAIMABLE).with_for_update(), {"b_task_id": task_id, "b_now": now}
        )
        if task is not None and task.claim_count >= self.ctx.settings.max_claims:
            await self._fail(
                session,
                task,
                "worker_lost",
                f"The task stopped its worker {task.claim_count} times and was given up.",
                now,
            )

    async def _renew(self, claim: Claim, work: asyncio.Task[object]) -> None:
        interval = self.ctx.settings.task_lease_seconds / 3
        while not work.done():
            await asyncio.sleep(interval)
            try:
                ok = await self._extend(claim)
            except Exception:
                log.exception("lease renewal failed", extra={"task_id": claim.task_id})
                continue  # keep trying; if the database stays away the lease simply expires
            if not ok:
                work.cancel()
                return

    async def _extend(self, claim: Claim, progress: int | None = None) -> bool:
        now = datetime.now(UTC)
        async with self.ctx.db.transaction() as session:
            values: dict[str, object] = {"lease_expires_at": now + self.lease}
            if progress is not None:
                values["progress"] = progress
                values["updated_at"] = now
            result = await session.execute(
                update(Task).where(self._held(claim)).values(**values).returning(Task.id)
            )
            if result.scalar_one_or_none() is None:
                return False
            if progress is not None:
                task = await session.get(Task, claim.task_id)
                assert task is not None
                await touch(session, task, kind="progress")
            return True

    def _held(self, claim: Claim) -> ColumnElement[bool]:
        """This worker still holds the claim's attempt: the condition of every write it makes."""
        t = tables.tasks
        return (
            (t.c.id == claim.task_id)
            & (t.c.status == TaskStatus.PROCESSING)
            & (t.c.lease_owner == self.worker_id)
            & (t.c.attempt == claim.attempt)
        )

    async def _unclaim(self, claim: Claim) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5), self.ctx.db.transaction() as session:
                await session.execute(
                    update(Task)
                    .where(self._held(claim))
                    .values(status=TaskStatus.PENDING, lease_owner=None, lease_expires_at=None)
                )

    # -- the work -----------------------------------------------------------------------------

    def _chain(self, claim: Claim) -> list[Provider]:
        """The task's provider first, then the rest of the task type's fallback chain after it."""
        names = [r.provider.name for r in self.ctx.registry.chain(claim.task_type)]
        start = names.index(claim.provider) if claim.provider in names else None
        names = names[start:] if start is not None else [claim.provider, *names]
        providers = [self.ctx.registry.get(n) for n in names]
        return [p for p in providers if p is not None]

    async def _work(self, claim: Claim, live: Live) -> ProviderResult | TaskFailure:
        chain = self._chain(claim)
        if not chain:
            return TaskFailure("provider_unavailable", f"The provider {claim.provider!r} is not configured.")
        try:
            inputs = [
                await load_input(self.ctx.storage, f.storage_key, f.content_type, f.original_name or "")
                for f in claim.inputs
            ]
        except ObjectNotFound:
            return TaskFailure("input_missing", "An input file of this task is missing from storage.")
        last_write = 0.0
        last_value = PROGRESS_START

        async def progress(value: float) -> None:
            nonlocal last_write, last_value
            scaled = int(PROGRESS_START + (PROGRESS_END - PROGRESS_START) * min(max(value, 0.0), 100.0) / 100)
            now = time.monotonic()
            if scaled <= last_value or now - last_write < PROGRESS_MIN_INTERVAL:
                return
            last_write, last_value = now, scaled
            try:
                held = await self._extend(claim, progress=scaled)
            except Exception:  # the database is away for a moment: keep working, the lease decides
                log.warning(
                    "progress write failed; continuing", exc_info=True, extra={"task_id": claim.task_id}
                )
                return
            if not held:
                raise LeaseLost

        async def remember(request_id: str) -> None:
            live.request_id = request_id
            if not await self._set_held(claim, ai_task_id=request_id[:255]):
                raise LeaseLost

        mask = None
        if claim.parameters.get("mask") is True and len(inputs) > 1:
            inputs, mask = inputs[:-1], inputs[-1]
        failure = TaskFailure("provider_unavailable", "No provider could serve the task.")
        for index, provider in enumerate(chain):
            if index > 0:
                log.info(
                    "falling back to the next provider",
                    extra={"task_id": claim.task_id, "provider": provider.name, "code": failure.code},
                )
                if not await self._set_held(claim, ai_provider=provider.name, ai_task_id=None, ai_model=None):
                    raise asyncio.CancelledError
            live.provider, live.request_id = provider, (claim.ai_task_id if index == 0 else None)
            request = ProviderRequest(
                task_id=claim.task_id,
                task_type=claim.task_type,
                inputs=inputs,
                parameters=claim.parameters,
                prompt=claim.prompt,
                resume_id=live.request_id,
                remember=remember,
                mask=mask,
                output_dir=self.ctx.storage.staging_dir,
            )
            started = time.perf_counter()
            outcome = "error"
            try:
                result = await provider.run(request, progress)
                outcome = "ok"
                return result
            except LeaseLost:
                outcome = "canceled"
                raise asyncio.CancelledError from None
            except ProviderError as exc:
                failure = TaskFailure(exc.code, exc.message)
                if exc.code not in FAILOVER_CODES:
                    return failure
                if index + 1 < len(chain):  # don't leave paid work running behind us
                    await self._abandon(claim, live)
            except Exception as exc:
                log.exception("provider crashed", extra={"task_id": claim.task_id})
                return TaskFailure("provider_error", f"The AI provider failed unexpectedly: {exc}")
            finally:
                metrics.PROVIDER_LATENCY.labels(provider.name, claim.task_type, outcome).observe(
                    time.perf_counter() - started
                )
        return failure

    async def _set_held(self, claim: Claim, **values: object) -> bool:
        """Write columns of the task while we hold it (and its attempt's provider when it changes)."""
        async with self.ctx.db.transaction() as session:
            result = await session.execute(
                update(Task).where(self._held(claim)).values(**values).returning(Task.id)
            )
            if result.scalar_one_or_none() is None:
                return False
            if "ai_provider" in values:
                await session.execute(
                    update(TaskAttempt)
                    .where(TaskAttempt.task_id == claim.task_id, TaskAttempt.attempt == claim.attempt)
                    .values(ai_provider=values["ai_provider"])
                )
            return True

    async def _abandon(self, claim: Claim, live: Live) -> None:
        """Falling over: cancel what the failing provider may still be running (best effort)."""
        cancel = getattr(live.provider, "cancel", None)
        if cancel is None or live.request_id is None:
            return
        try:
            async with asyncio.timeout(30):
                await cancel(live.request_id)
        except Exception:
            log.warning("could not cancel the abandoned request", extra={"task_id": claim.task_id})

    async def _cancel_remote(self, claim: Claim, live: Live) -> None:
        """The lease is gone: if the user canceled, stop the provider's work too (best effort)."""
        cancel = getattr(live.provider, "cancel", None)
        if cancel is None or live.request_id is None:
            return
        try:
            async with self.ctx.db.transaction(write=False) as session:
                task = await session.get(Task, claim.task_id)
                canceled = (
                    task is not None and task.status == TaskStatus.CANCELED and task.attempt == claim.attempt
                )
            if canceled:
                async with asyncio.timeout(30):
                    await cancel(live.request_id)
                log.info("canceled at the provider", extra={"task_id": claim.task_id})
        except Exception:
            log.exception("provider-side cancel failed", extra={"task_id": claim.task_id})

    # -- finishing ----------------------------------------------------------------------------

    async def _finish_completed(self, claim: Claim, result: ProviderResult) -> None:
        if not result.outputs:
            await self._finish_failed(claim, TaskFailure("provider_error", "The provider returned no image."))
            return
        stored: list[dict[str, object]] = []
        try:
            for position, out in enumerate(result.outputs):
                kept = await store_output(self.ctx.storage, f"{claim.task_no}_{position + 1}", out)
                if kept is None:
                    break
                stored.append(
                    {
                        "id": new_id(),
                        "task_id": claim.task_id,
                        "role": "output",
                        "attempt": claim.attempt,
                        "position": position,
                        "storage_key": kept.key,
                        "content_type": kept.content_type,
                        "size": kept.size,
                        "width": kept.width,
                        "height": kept.height,
                        "original_name": None,
                    }
                )
        finally:
            discard_staged(result.outputs[len(stored) + 1 :])  # after a failure: not stored
        if len(stored) < len(result.outputs):
            await self._delete([str(f["storage_key"]) for f in stored])
            failure = TaskFailure("provider_error", "The provider returned something that is not an image.")
            await self._finish_failed(claim, failure)
            return
        now = datetime.now(UTC)
        params: dict[str, object] = {
            "b_task_id": claim.task_id,
            "b_owner": self.worker_id,
            "b_attempt": claim.attempt,
            "b_now": now,
            "b_request_id": result.request_id or None,  # else keep the one remembered while it ran
            "b_model": result.model or None,
            "b_metadata": dict(result.metadata) or None,
        }
        done = False
        try:
            async with self.ctx.db.core_transaction() as session:
                # The event first: its id is the ``seq`` that the task's UPDATE writes (no second
                # UPDATE for it). If we no longer hold the task, everything rolls back, event too.
                params["b_seq"] = await insert_event(
                    session, claim.task_id, claim.user_id, TaskStatus.COMPLETED, 100
                )
                if (await execute(session, _COMPLETE, params)).first() is None:
                    raise _NotHeld
                if stored:
                    await execute(session, _INSERT_OUTPUTS, stored)
                await end_attempt(session, claim.task_id, claim.attempt, "completed", now)
                await credits.capture(
                    session, claim.user_id, claim.task_id, claim.attempt, claim.cost, claim.task_no
                )
                changed(session, claim.task_id, claim.user_id)
            done = True  # committed: the commit is the last step that can fail
        except _NotHeld:  # canceled meanwhile, or the lease was lost: a no-op
            return
        finally:
            if not done:  # canceled meanwhile, lease lost, or the transaction failed
                await self._delete([str(f["storage_key"]) for f in stored])
        log.info("task completed", extra={"task_id": claim.task_id, "attempt": claim.attempt})

    async def _finish_failed(self, claim: Claim, failure: TaskFailure) -> None:
        now = datetime.now(UTC)
        params = {
            "b_task_id": claim.task_id,
            "b_owner": self.worker_id,
            "b_attempt": claim.attempt,
            "b_now": now,
            "b_error_code": failure.code,
            "b_error_message": failure.message,
        }
        async with self.ctx.db.core_transaction() as session:
            row = (await execute(session, _FAIL, params)).first()
            if row is None:  # canceled meanwhile, or the lease was lost: a no-op
                return
            await end_attempt(
                session, claim.task_id, claim.attempt, "failed", now, failure.code, failure.message
            )
            await credits.release(
                session, claim.user_id, claim.task_id, claim.attempt, claim.cost, claim.task_no, failure.code
            )
            await record(session, claim.task_id, claim.user_id, TaskStatus.FAILED, row.progress)
        log.info("task failed", extra={"task_id": claim.task_id, "code": failure.code})

    async def _fail(self, session: AsyncSession, task: Task, code: str, message: str, now: datetime) -> None:
        task.status = TaskStatus.FAILED
        task.error_code = code
        task.error_message = message
        task.completed_at = now
        task.updated_at = now
        task.lease_owner = None
        task.lease_expires_at = None
        await close_attempt(session, task, "failed", now)
        await credits.release(session, task.user_id, task.id, task.attempt, task.cost, task.task_no, code)
        await touch(session, task)

    async def _delete(self, keys: list[str]) -> None:
        for key in keys:
            with contextlib.suppress(Exception):
                await self.ctx.storage.delete(key)
