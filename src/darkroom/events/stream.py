"""Server-Sent Events of task changes, replayed from ``task_events`` and then followed live.

Each event's ``id`` is the global sequence number (``task_events.id``, copied to ``task.seq``).
A client that reconnects with ``Last-Event-ID: N`` gets every change after N from the table
before any live one, so a dropped connection never loses a change. Listening starts *before*
the first query, so a change committed between the query and the wait still wakes the stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import ServerSentEvent

from darkroom.context import AppContext
from darkroom.db import DriverStatement
from darkroom.models import TaskEvent

BATCH = 200
# Look at the table again after this long even without a wake-up (a safety net only: wake-ups
# come from this process's commits and from the table tail).
RECHECK_SECONDS = 60.0


def to_sse(event: Any) -> ServerSentEvent:
    """``event``: a ``TaskEvent`` or a row of ``_AFTER`` (the same attributes)."""
    data = {
        "taskId": event.task_id,
        "seq": event.id,
        "kind": event.kind,
        "status": event.status,
        "progress": event.progress,
        "at": event.created_at.isoformat(),
    }
    return ServerSentEvent(data=json.dumps(data), id=str(event.id))


async def latest_for_user(ctx: AppContext, user_id: str) -> int:
    async with ctx.db.transaction(write=False) as session:
        return await latest_in(session, user_id)


async def latest_in(session: AsyncSession, user_id: str) -> int:
    """The user's newest event sequence number (0 if none), read in the caller's transaction."""
    value = await session.scalar(select(func.max(TaskEvent.id)).where(TaskEvent.user_id == user_id))
    return int(value or 0)


def _after_query(*where: Any) -> DriverStatement:
    return DriverStatement(
        select(
            TaskEvent.id,
            TaskEvent.task_id,
            TaskEvent.kind,
            TaskEvent.status,
            TaskEvent.progress,
            TaskEvent.created_at,
        )
        .where(TaskEvent.user_id == bindparam("user_id"), TaskEvent.id > bindparam("last"), *where)
        .order_by(TaskEvent.id)
        .limit(BATCH)
    )


# One driver statement per wake-up (``Database.fetch_single``): a session and a transaction
# around it cost more than the query (bench figure 6, CPU per delivered update).
_AFTER = _after_query()
_AFTER_TASK = _after_query(TaskEvent.task_id == bindparam("task_id"))


async def _after(ctx: AppContext, user_id: str, task_id: str | None, last: int) -> list[Any]:
    if task_id is None:
        return await ctx.db.fetch_single(_AFTER, {"user_id": user_id, "last": last})
    return await ctx.db.fetch_single(_AFTER_TASK, {"user_id": user_id, "last": last, "task_id": task_id})


async def task_events(
    ctx: AppContext, user_id: str, task_id: str | None, last: int
) -> AsyncIterator[ServerSentEvent]:
    """Events of one user (optionally one task) after ``last``, forever."""
    with ctx.events.subscribe(user_id) as waiter:
        while True:
            rows = await _after(ctx, user_id, task_id, last)
            for row in rows:
                yield to_sse(row)
            if rows:
                last = rows[-1].id
            if len(rows) < BATCH:
                # Keep-alive comments are sent by the response itself while we wait here.
                await waiter.wait(RECHECK_SECONDS)


def parse_last_event_id(header: str | None, query: str | None) -> int | None:
    """``Last-Event-ID`` header (browsers send it on reconnect) or the ``lastEventId`` parameter."""
    for raw in (header, query):
        if raw is not None and raw.strip().isdigit():
            return int(raw.strip())
    return None
