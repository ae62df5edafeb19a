from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from darkroom.deps import Context, CurrentUser, Session
from darkroom.errors import PayloadTooLarge
from darkroom.models import Upload as UploadRow
from darkroom.providers.registry import KNOWN_TASK_TYPES
from darkroom.schemas import Envelope, PageEnvelope, Pagination, ok
from darkroom.tasks import service
from darkroom.tasks.presenter import present
from darkroom.tasks.schemas import ParameterRead, TaskRead, TaskStatusRead, TaskTypeRead
from darkroom.tasks.status import task_status
from darkroom.uploads import service as uploads_service

router = APIRouter(prefix="/api", tags=["tasks"])

StatusFilter = Literal["pending", "processing", "completed", "failed", "canceled"]


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json")


@router.post("/tasks", status_code=201, response_model=Envelope[TaskRead])
async def create_task(
    request: Request,
    user: CurrentUser,
    session: Session,
    ctx: Context,
    task_type: Annotated[str, Form(alias="taskType", description="e.g. background_removal")],
    files: Annotated[list[UploadFile] | None, File(description="1–5 JPEG, PNG or WebP images")] = None,
    parameters: Annotated[str | None, Form(description="A JSON object as a string")] = None,
    upload_ids: Annotated[
        list[str] | None, Form(alias="uploadIds", description="Ids from POST /api/uploads, instead of files")
    ] = None,
) -> dict[str, Any]:
    """Create a task. The price is reserved now and charged only when the task completes."""
    uploads = []
    limit = ctx.settings.max_file_bytes
    for upload in files or []:
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(
                f"{upload.filename or 'file'} is {upload.size / 2**20:.1f} MB; the limit is "
                f"{ctx.settings.max_file_mb:g} MB per file.",
                code="file_too_large",
            )
        data = await upload.read(limit + 1)
        uploads.append(service.Upload(name=upload.filename, data=data))
    direct: list[UploadRow] = []
    if upload_ids:  # direct uploads (uploads/service.py): checked, then stored like the files above
        ids = [part for value in upload_ids for part in value.split(",")]
        taken, direct = await uploads_service.take(ctx, session, user, ids)
        uploads.extend(taken)
    task = await service.create_task(ctx, session, user, task_type, parameters, uploads)
    await uploads_service.mark_used(ctx, session, direct, task.id)
    files_by_task = await service.files_of(session, [task])
    return ok(_dump(present(ctx, str(request.base_url), task, files_by_task[task.id])), "Task created")


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
