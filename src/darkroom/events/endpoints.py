from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from darkroom.deps import Context, CurrentUser, Session
from darkroom.events.stream import latest_in, parse_last_event_id, task_events
from darkroom.tasks import service

router = APIRouter(prefix="/api", tags=["events"])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "A stream of Server-Sent Events"}
}

LastEventHeader = Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)]
LastEventQuery = Annotated[
    str | None, Query(alias="lastEventId", description="Resume after this sequence number")
]


def _response(ctx: Context, events: object) -> EventSourceResponse:
    return EventSourceResponse(
        events,  # type: ignore[arg-type]
        headers=_SSE_HEADERS,
        ping=ctx.settings.sse_keepalive_seconds,
    )


@router.get("/events", response_class=EventSourceResponse, responses=_DOC)
async def user_events(
    user: CurrentUser,
    session: Session,
    ctx: Context,
    last_event_id: LastEventHeader = None,
    after: LastEventQuery = None,
) -> EventSourceResponse:
    """Every change of every task of the user, as Server-Sent Events whose ``id`` is the sequence
    number. Without ``Last-Event-ID`` the stream starts with the next change."""
    last = parse_last_event_id(last_event_id, after)
    if last is None:
        # In the request's read transaction: a second connection taken while the request holds
        # one deadlocked the pool when more streams opened at once than it has connections.
        last = await latest_in(session, user.id)
    return _response(ctx, task_events(ctx, user.id, None, last))


@router.get("/tasks/{task_id}/events", response_class=EventSourceResponse, responses=_DOC)
async def one_task_events(
    task_id: str,
    user: CurrentUser,
    session: Session,
    ctx: Context,
    last_event_id: LastEventHeader = None,
    after: LastEventQuery = None,
) -> EventSourceResponse:
    """The changes of one task. Without ``Last-Event-ID`` its whole history is replayed first,
    so the last event always gives the current state."""
    task = await service.get_owned(session, user, task_id)
    last = parse_last_event_id(last_event_id, after) or 0
    return _response(ctx, task_events(ctx, user.id, task.id, last))
