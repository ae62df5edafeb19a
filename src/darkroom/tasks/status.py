"""The status poll, kept lean (bench figure 5): one dependency-free handler, one SELECT on the
driver (``Database.fetch_single``) that checks the token's user and reads the task with its
current result keys, a body encoded
once. Same answers as the other task routes: 401 ``unauthorized`` / ``invalid_token`` /
``token_expired`` / ``token_revoked``, 404 ``task_not_found`` for a missing or someone else's
task, an ETag from the task's ``seq`` and 304 when If-None-Match holds it."""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from darkroom.auth.security import decode_token_cached
from darkroom.auth.service import check_token_user
from darkroom.context import AppContext
from darkroom.db import DriverStatement
from darkroom.errors import NotFound
from darkroom.models import Task, TaskFile, User
from darkroom.models.task import TaskStatus
from darkroom.schemas import Envelope
from darkroom.tasks.presenter import file_url
from darkroom.tasks.schemas import TaskStatusRead
from darkroom.web import session as web_session

CACHE_CONTROL = "private, no-cache"

# The user ⟕ the task if it is theirs ⟕ the outputs of its current attempt: one row per output
# (one with NULL file columns if none), a row with NULL task columns when the task is missing
# or someone else's, no row when the user does not exist.
_STATUS = DriverStatement(
    select(
        User.is_active,
        User.token_version,
        Task.id,
        Task.task_no,
        Task.status,
        Task.progress,
        Task.error_code,
        Task.error_message,
        Task.retry_count,
        Task.seq,
        Task.updated_at,
        TaskFile.storage_key,
    )
    .select_from(User)
    .outerjoin(Task, and_(Task.user_id == User.id, Task.id == bindparam("task_id")))
    .outerjoin(
        TaskFile,
        and_(
            TaskFile.task_id == Task.id,
            TaskFile.role == "output",
            TaskFile.attempt == Task.attempt,
            Task.status == TaskStatus.COMPLETED,
        ),
    )
    .where(User.id == bindparam("user_id"))
    .order_by(TaskFile.position)
)
_ENVELOPE = Envelope[TaskStatusRead]


def bearer_token(request: Request) -> str | None:
    """As FastAPI's HTTPBearer(auto_error=False) reads it."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials if credentials and scheme.lower() == "bearer" else None


class OwnedRows(NamedTuple):
    ctx: AppContext
    user_id: str
    rows: list[Any]


async def owned_task_rows(request: Request, statement: DriverStatement, task_id: str) -> OwnedRows:
    """The request's token checked and ``statement`` run on the driver (``Database.fetch_single``)
    for its user and ``task_id``: the user ⟕ their task, no row when the user does not exist and a
    NULL task ``id`` when the task is missing or someone else's. 401 ``unauthorized`` /
    ``invalid_token`` / ``token_expired`` / ``token_revoked``, 404 ``task_not_found``. For the
    lean task routes outside FastAPI (the status poll, a task's event stream)."""
    ctx: AppContext = request.app.state.ctx
    token = web_session.request_token(request, bearer_token(request))
    claims = decode_token_cached(token, ctx.settings.secret_key)
    rows = await ctx.db.fetch_single(statement, {"task_id": task_id, "user_id": claims.user_id})
    first = check_token_user(rows[0] if rows else None, claims)  # no row: no such user
    if first.id is None:  # someone else's task looks exactly like a missing one
        raise NotFound("Task not found.", code="task_not_found")
    return OwnedRows(ctx, claims.user_id, rows)


async def task_status(request: Request, task_id: str) -> Response:
    ctx, _, rows = await owned_task_rows(request, _STATUS, task_id)
    first = rows[0]
    etag = f'W/"{first.id}-{first.seq}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    base = str(request.base_url)
    body = _ENVELOPE(
        data=TaskStatusRead(
            id=first.id,
            task_no=first.task_no,
            status=first.status,
            progress=first.progress,
            result_urls=[file_url(ctx, base, r.storage_key) for r in rows if r.storage_key is not None],
            error_code=first.error_code,
            error_message=first.error_message,
            retry_count=first.retry_count,
            seq=first.seq,
            updated_at=first.updated_at,
        )
    )
    return Response(body.model_dump_json(by_alias=True), media_type="application/json", headers=headers)


async def _status_endpoint(request: Request) -> Response:
    return await task_status(request, request.path_params["task_id"])


def status_route() -> Route:
    """The poll as a plain Starlette route, for the front of the app's routes: it skips FastAPI's
    request handling (dependency solving, the exit stack) and the match against every route
    before it. The FastAPI route of the same path stays, for the OpenAPI document."""
    return Route("/api/tasks/{task_id}/status", _status_endpoint, methods=["GET"], include_in_schema=False)
