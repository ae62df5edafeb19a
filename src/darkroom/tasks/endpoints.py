from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import Route

from darkroom.context import AppContext
from darkroom.deps import Context, CurrentUser, Session, write_user
from darkroom.errors import Unprocessable
from darkroom.models import Upload as UploadRow
from darkroom.models import User
from darkroom.providers.registry import KNOWN_TASK_TYPES
from darkroom.schemas import Envelope, PageEnvelope, Pagination, ok
from darkroom.tasks import service
from darkroom.tasks.presenter import present
from darkroom.tasks.schemas import ParameterRead, TaskRead, TaskStatusRead, TaskTypeRead
from darkroom.tasks.status import bearer_token, task_status
from darkroom.uploads import inputs
from darkroom.uploads import service as uploads_service
from darkroom.uploads.form import FormLimits, read_form

router = APIRouter(prefix="/api", tags=["tasks"])

StatusFilter = Literal["pending", "processing", "completed", "failed", "canceled"]


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json")


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# The form, documented as FastAPI documents File()/Form() parameters: the body is read by
# uploads/form.py as a stream (files go straight to storage), so FastAPI does not parse it.
CREATE_TASK_FORM: dict[str, Any] = {
    "title": "Body_create_task_api_tasks_post",
    "type": "object",
    "required": ["taskType"],
    "properties": {
        "taskType": {"type": "string", "title": "Tasktype", "description": "e.g. background_removal"},
        "files": {
            **_optional(
                {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"}}
            ),
            "title": "Files",
            "description": "1–5 JPEG, PNG or WebP images",
        },
        "parameters": {
            **_optional({"type": "string"}),
            "title": "Parameters",
            "description": "A JSON object as a string",
        },
        "uploadIds": {
            **_optional({"type": "array", "items": {"type": "string"}}),
            "title": "Uploadids",
            "description": "Ids from POST /api/uploads, instead of files",
        },
    },
}


@router.post(
    "/tasks",
    status_code=201,
    response_model=Envelope[TaskRead],
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": CREATE_TASK_FORM}}}
    },
    responses={
        413: {"description": "A file over the per-file limit (file_too_large)"},
        415: {"description": "A file that is not a JPEG, PNG or WebP image"},
        422: {"description": "A missing or invalid field, or a corrupt image"},
    },
)
async def create_task(request: Request, user: CurrentUser, ctx: Context) -> dict[str, Any]:
    """Create a task. The price is reserved now and charged only when the task completes."""
    return await _create(request, user, ctx)


async def _create(request: Request, user: User, ctx: AppContext) -> dict[str, Any]:
    settings = ctx.settings
    limits = FormLimits(settings.max_file_bytes, settings.max_file_mb, settings.max_files)
    form = await read_form(request, ctx.storage.staging_dir, limits)
    upload_ids = form.fields.get("uploadIds")
    # Core statements only, unless direct uploads are taken (uploads/service.py uses the ORM)
    transaction = ctx.db.transaction() if upload_ids else ctx.db.core_transaction()
    async with transaction as session:
        try:  # the fields may come in any order, so they are validated once the body has ended
            task_type = form.first("taskType")
            if task_type is None:
                raise Unprocessable(
                    "The request is not valid: taskType: Field required", code="validation_error"
                )
            uploads = await inputs.store_staged(ctx, session, form.files.get("files", []))
        finally:
            form.discard()  # what was not stored (stored keys are deleted if the transaction rolls back)
        direct: list[UploadRow] = []
        if upload_ids and isinstance(session, AsyncSession):  # direct uploads (uploads/service.py)
            ids = [part for value in upload_ids for part in value.split(",")]
            taken, direct = await uploads_service.take(ctx, session, user, ids)
            uploads.extend(taken)
        task, files = await service.create_task(
            ctx, session, user, task_type, form.first("parameters"), uploads
        )
        if direct and isinstance(session, AsyncSession):
            await uploads_service.mark_used(ctx, session, direct, task.id)
    return ok(_dump(present(ctx, str(request.base_url), task, files)), "Task created")


async def _create_endpoint(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    user = await write_user(request, ctx, bearer_token(request))
    return JSONResponse(await _create(request, user, ctx), status_code=201)


def create_route() -> Route:
    """``POST /api/tasks`` as a plain Starlette route in front of the app's routes (as the status
    poll, ``tasks/status.py``): the same work and answers without FastAPI's request handling
    (dependency solving, the exit stack, validating the response it is handed). Bench figure 3.
    The FastAPI route above stays, for the OpenAPI document."""
    return Route("/api/tasks", _create_endpoint, methods=["POST"], include_in_schema=False)


@router.get("/tasks", response_model=PageEnvelope[list[TaskRead]])
async def list_tasks(
    request: Request,
    user: CurrentUser,
    session: Session,
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: StatusFilter | None = None,
) -> dict[str, Any]:
    """The user's tasks, newest first."""
    tasks, total = await service.list_tasks(session, user, limit=limit, offset=offset, status=status)
    files = await service.files_of(session, tasks)
    data = [_dump(present(ctx, str(request.base_url), t, files[t.id])) for t in tasks]
    return ok(data, pagination=_dump(Pagination.of(total, limit, offset)))


@router.get("/tasks/{task_id}", response_model=Envelope[TaskRead])
async def get_task(
    task_id: str, request: Request, user: CurrentUser, session: Session, ctx: Context
) -> dict[str, Any]:
    task = await service.get_owned(session, user, task_id)
    files = await service.files_of(session, [task])
    attempts = await service.attempts_of(session, task)
    return ok(_dump(present(ctx, str(request.base_url), task, files[task.id], attempts)))


@router.get(
    "/tasks/{task_id}/status",
    response_model=Envelope[TaskStatusRead],
    responses={304: {"description": "Not modified since the ETag in If-None-Match"}},
    openapi_extra={"security": [{"HTTPBearer": []}]},  # auth is checked in tasks/status.py
)
async def get_task_status(task_id: str, request: Request) -> Response:
    """Cheap to poll: answers 304 when the task has not changed since the ETag you hold."""
    return await task_status(request, task_id)


@router.post("/tasks/{task_id}/retry", response_model=Envelope[TaskRead])
async def retry_task(
    task_id: str, request: Request, user: CurrentUser, session: Session, ctx: Context
) -> dict[str, Any]:
    """Run a failed task again (at most 3 times). Reserves its price again."""
    task = await service.retry_task(ctx, session, user, task_id)
    files = await service.files_of(session, [task])
    return ok(_dump(present(ctx, str(request.base_url), task, files[task.id])), "Task queued again")


@router.post("/tasks/{task_id}/cancel", response_model=Envelope[TaskRead])
async def cancel_task(
    task_id: str, request: Request, user: CurrentUser, session: Session, ctx: Context
) -> dict[str, Any]:
    """Stop a pending or processing task; its reserved credits are released."""
    task = await service.cancel_task(session, user, task_id)
    files = await service.files_of(session, [task])
    return ok(_dump(present(ctx, str(request.base_url), task, files[task.id])), "Task canceled")


@router.get("/task-types", response_model=Envelope[list[TaskTypeRead]])
async def task_types(ctx: Context) -> dict[str, Any]:
    """Every task type, its price, the provider that serves it here and its parameters."""
    out = []
    for task_type, description in KNOWN_TASK_TYPES.items():
        route = ctx.registry.route(task_type)
        spec = route.spec if route else None
        out.append(
            TaskTypeRead(
                task_type=task_type,
                description=spec.description or description if spec else description,
                available=route is not None,
                price=ctx.settings.price_of(task_type),
                provider=route.provider.name if route else None,
                providers=ctx.registry.serving(task_type),
                min_files=spec.min_inputs if spec else 0,
                max_files=min(spec.max_inputs, ctx.settings.max_files) if spec else 0,
                parameters={
                    name: ParameterRead(
                        type=p.type,
                        allowed=list(p.allowed) if p.allowed is not None else None,
                        default=p.default,
                        minimum=p.minimum,
                        maximum=p.maximum,
                        description=p.description,
                    )
                    for name, p in (spec.parameters.items() if spec else [])
                },
            )
        )
    return ok([_dump(t) for t in out])
