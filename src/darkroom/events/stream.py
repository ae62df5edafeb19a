"""Server-Sent Events of task changes, replayed from ``task_events`` and then followed live.

Each event's ``id`` is the global sequence number (``task_events.id``, copied to ``task.seq``).
A client that reconnects with ``Last-Event-ID: N`` gets every change after N from the table
before any live one, so a dropped connection never loses a change. Listening starts *before*
the first query, so a change committed between the query and the wait still wakes the stream.

``EventStream`` writes the stream to the ASGI server itself (bench figure 6): the request's own
task reads and writes the events and the keep-alive comments, and one small task waits for the
client to go away. sse-starlette's ``EventSourceResponse`` ran four tasks in an anyio task group
per stream (the events, the pings, a disconnect listener, a shutdown listener) and a cancel
scope around every write, the largest part of a stream's cost after its opening. The bytes on
the wire are the same.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from darkroom.context import AppContext
from darkroom.db import DriverStatement
from darkroom.events.hub import EventHub, Waiter
from darkroom.models import TaskEvent

BATCH = 200
# Look at the table again after this long even without a wake-up (a safety net only: wake-ups
# come from this process's commits and from the table tail).
RECHECK_SECONDS = 60.0


def encode_events(events: Iterable[Any]) -> bytes:
    """Events as Server-Sent Events (``id`` and one ``data`` line each: JSON has no line breaks).
    ``events``: rows of ``_after_query`` (``cursor``: the stream position, the event's ``id``)."""
    return "".join(
        f"id: {event.cursor}\r\ndata: "
        + json.dumps(
            {
                "taskId": event.task_id,
                "seq": event.id,
                "kind": event.kind,
                "status": event.status,
                "progress": event.progress,
                "at": event.created_at.isoformat(),
            }
        )
        + "\r\n\r\n"
        for event in events
    ).encode()


def cursor_column(is_sqlite: bool) -> Any:
    """What streams are ordered and resumed by: the event's id on SQLite (one writer: ids are in
    commit order), its commit-ordered ``position`` on PostgreSQL (``models.TaskEvent``)."""
    return TaskEvent.id if is_sqlite else TaskEvent.position


async def latest_for_user(ctx: AppContext, user_id: str) -> int:
    async with ctx.db.transaction(write=False) as session:
        return await latest_in(session, user_id)


async def latest_in(session: AsyncSession, user_id: str) -> int:
    """The user's newest stream position (0 if none), read in the caller's transaction."""
    column = cursor_column(session.get_bind().dialect.name == "sqlite")
    value = await session.scalar(select(func.max(column)).where(TaskEvent.user_id == user_id))
    return int(value or 0)


def _after_query(cursor: Any, *where: Any) -> DriverStatement:
    return DriverStatement(
        select(
            cursor.label("cursor"),
            TaskEvent.id,
            TaskEvent.task_id,
            TaskEvent.kind,
            TaskEvent.status,
            TaskEvent.progress,
            TaskEvent.created_at,
        )
        .where(TaskEvent.user_id == bindparam("user_id"), cursor > bindparam("last"), *where)
        .order_by(cursor)
        .limit(BATCH)
    )


# One driver statement per wake-up (``Database.fetch_single``): a session and a transaction
# around it cost more than the query (bench figure 6, CPU per delivered update). By
# ``is_sqlite``: (all of the user's events, one task's).
_AFTER = {
    is_sqlite: (
        _after_query(cursor_column(is_sqlite)),
        _after_query(cursor_column(is_sqlite), TaskEvent.task_id == bindparam("task_id")),
    )
    for is_sqlite in (True, False)
}


async def _after(ctx: AppContext, user_id: str, task_id: str | None, last: int) -> list[Any]:
    every, one_task = _AFTER[ctx.db.is_sqlite]
    if task_id is None:
        return await ctx.db.fetch_single(every, {"user_id": user_id, "last": last})
    return await ctx.db.fetch_single(one_task, {"user_id": user_id, "last": last, "task_id": task_id})


# The headers sse-starlette sent, in its order (ours, then its own, then the media type).
_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
_END = {"type": "http.response.body", "body": b"", "more_body": False}


class EventStream(Response):
    """The events of one user (optionally one task) after ``last``, until the client goes away
    or the server stops; a ``: ping`` comment every ``DARKROOM_SSE_KEEPALIVE_SECONDS``."""

    def __init__(self, ctx: AppContext, user_id: str, task_id: str | None, last: int) -> None:
        self.ctx = ctx
        self.user_id = user_id
        self.task_id = task_id
        self.last = last
        self.status_code = 200
        self.background = None
        self.raw_headers = list(_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        with self.ctx.events.subscribe(self.user_id) as waiter:
            listener = asyncio.create_task(_until_disconnect(receive, waiter))
            try:
                await self._stream(send, waiter)
            finally:
                listener.cancel()
        await send(_END)  # (the server drops it if the client has gone)
        if self.background is not None:
            await self.background()

    async def _stream(self, send: Send, waiter: Waiter) -> None:
        loop = asyncio.get_running_loop()
        keepalive = self.ctx.settings.sse_keepalive_seconds
        next_ping = loop.time() + keepalive
        last = self.last
        while not waiter.closed:
            rows = await _after(self.ctx, self.user_id, self.task_id, last)
            if rows:
                await send({"type": "http.response.body", "body": encode_events(rows), "more_body": True})
                last = rows[-1].cursor
                if len(rows) == BATCH:
                    continue
            recheck = loop.time() + RECHECK_SECONDS
            while not await waiter.wait(min(next_ping, recheck) - loop.time()):
                now = loop.time()
                if now >= next_ping:
                    ping = f": ping - {datetime.now(UTC)}\r\n\r\n".encode()
                    await send({"type": "http.response.body", "body": ping, "more_body": True})
                    next_ping = now + keepalive
                if now >= recheck:
                    break


async def _until_disconnect(receive: Receive, waiter: Waiter) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    waiter.close()


def _server_stopping() -> bool:
    """uvicorn's flag: its SIGTERM/SIGINT handler is the bound ``Server.handle_exit``."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


async def close_streams_on_stop(hub: EventHub, every: float = 0.5) -> None:
    """Told to stop, uvicorn waits (up to its graceful timeout, 10 s) for open responses to end
    before the app's shutdown runs, and tells the app nothing: look at its flag twice a second
    and end every stream when it is set. Runs until cancelled (the app's shutdown)."""
    while not _server_stopping():  # noqa: ASYNC110 - nothing to wait on: uvicorn only sets a flag
        await asyncio.sleep(every)
    hub.close()


def parse_last_event_id(header: str | None, query: str | None) -> int | None:
    """``Last-Event-ID`` header (browsers send it on reconnect) or the ``lastEventId`` parameter."""
    for raw in (header, query):
        if raw is not None and raw.strip().isdigit():
            return int(raw.strip())
    return None
