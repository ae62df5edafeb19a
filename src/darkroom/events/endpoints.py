from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sqlalchemy import and_, bindparam, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from darkroom.db import DriverStatement
from darkroom.deps import Context, CurrentUser, Session
from darkroom.events.stream import EventStream, latest_in, parse_last_event_id
from darkroom.models import Task, User
from darkroom.tasks.status import owned_task_rows

router = APIRouter(prefix="/api", tags=["events"])

_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "A stream of Server-Sent Events"}
}

LastEventHeader = Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)]
LastEventQuery = Annotated[
    str | None, Query(alias="lastEventId", description="Resume after this stream position (an event's id)")
]


@router.get("/events", status_code=200, response_class=EventStream, responses=_DOC)
async def user_events(
    user: CurrentUser,
    session: Session,
    ctx: Context,
    last_event_id: LastEventHeader = None,
    after: LastEventQuery = None,
) -> EventStream:
    """Every change of every task of the user, as Server-Sent Events whose ``id`` is the stream
    position (the sequence number on SQLite; on PostgreSQL given in commit order). Without
    ``Last-Event-ID`` the stream starts with the next change."""
    last = parse_last_event_id(last_event_id, after)
    if last is None:
        # In the request's read transaction: a second connection taken while the request holds
        # one deadlocked the pool when more streams opened at once than it has connections.
        last = await latest_in(session, user.id)
    return EventStream(ctx, user.id, None, last)


@router.get(
    "/tasks/{task_id}/events",
    status_code=200,
    response_class=EventStream,
    responses=_DOC,
    openapi_extra={"security": [{"HTTPBearer": []}]},  # auth is checked in open_task_stream
)
async def one_task_events(
    task_id: str,
    request: Request,
    last_event_id: LastEventHeader = None,
    after: LastEventQuery = None,
) -> Response:
    """The changes of one task. Without ``Last-Event-ID`` its whole history is replayed first,
    so the last event always gives the current state."""
    return await open_task_stream(request, task_id)


# The token's user ⟕ the task if it is theirs: no row when the user does not exist, NULL task
# columns when the task is missing or someone else's.
_OWNED = DriverStatement(
    select(User.is_active, User.token_version, Task.id)
    .select_from(User)
    .outerjoin(Task, and_(Task.user_id == User.id, Task.id == bindparam("task_id")))
    .where(User.id == bindparam("user_id"))
)


async def open_task_stream(request: Request, task_id: str) -> Response:
    """Opening a task's stream costs one statement on the driver (``Database.fetch_single``) that
    checks the token's user and the task's owner, as the status poll does (bench figure 6: the
    opening through FastAPI's dependencies and two ORM reads in a session cost more than the
    ~8 updates a task's stream delivers). Same answers as the other task routes: 401
    ``unauthorized`` / ``invalid_token`` / ``token_revoked``, 404 ``task_not_found`` for a
    missing or someone else's task."""
    ctx, user_id, _ = await owned_task_rows(request, _OWNED, task_id)
    last = parse_last_event_id(request.headers.get("last-event-id"), request.query_params.get("lastEventId"))
    return EventStream(ctx, user_id, task_id, last or 0)


async def _task_events_endpoint(request: Request) -> Response:
    return await open_task_stream(request, request.path_params["task_id"])


def task_events_route() -> Route:
    """The task's stream as a plain Starlette route in front of the app's routes (as the status
    poll): no dependency solving, no exit stack, no match against every route before it. GET
    only, as the FastAPI route (which stays, for the OpenAPI document)."""
    path = "/api/tasks/{task_id}/events"
    route = Route(path, _task_events_endpoint, methods=["GET"], include_in_schema=False)
    route.methods = {"GET"}  # Starlette adds HEAD, which would open a stream that never ends
    return route
