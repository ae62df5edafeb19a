"""Tasks: create (with the credit reservation), read, list, retry, cancel. Never commits.

The transaction that creates a task also reserves its price; the job is dispatched only after
that commit (``uow.after_commit``). Its inputs arrive checked and already stored (uploads/inputs.py
streams them to storage); whoever stored them deletes them again if the transaction rolls back.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from darkroom import imaging
from darkroom.context import AppContext
from darkroom.credits import service as credits
from darkroom.db import DriverStatement, Transaction, execute
from darkroom.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from darkroom.models import ACTIVE_STATUSES, Task, TaskAttempt, TaskFile, TaskStatus, User, tables
from darkroom.models.base import loaded, new_id
from darkroom.providers import limits
from darkroom.providers.base import TaskTypeSpec
from darkroom.providers.params import InvalidParameter, validate_parameters
from darkroom.providers.registry import KNOWN_TASK_TYPES
from darkroom.tasks.events import changed, close_attempt, insert_event, next_event_id, touch
from darkroom.uow import after_commit

_TASK_NO_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Upload:
    """An input file, checked (type, pixel limit, structure: ``info``) and stored under ``key``.
    ``name`` is the client's file name, shown but never trusted."""

    name: str | None
    key: str
    size: int
    info: imaging.ImageInfo


def new_task_no(now: datetime) -> str:
    suffix = "".join(secrets.choice(_TASK_NO_ALPHABET) for _ in range(4))
    return f"T{now:%Y%m%d%H%M%S}{suffix}"


def parse_parameters(raw: str | None) -> dict[str, Any]:
    if raw is None or raw.strip() == "":
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Unprocessable(
            f"parameters must be a JSON object; this is not valid JSON ({exc.msg}).",
            code="invalid_parameters",
        ) from None
    if not isinstance(value, dict):
        raise Unprocessable(
            'parameters must be a JSON object, like {"style": "..."}.', code="invalid_parameters"
        )
    return value


def default_prompt(task_type: str, params: dict[str, Any]) -> str | None:
    if isinstance(params.get("prompt"), str):
        return str(params["prompt"])
    match task_type:
        case "style_transfer":
            return f"Transform the image with the {params.get('style', 'chosen')} style."
        case "background_removal":
            return "Remove the background from the image, keeping only the main subject."
        case "color_enhancement":
            return f"Enhance the colours in the image with the {params.get('enhancement', 'auto')} effect."
    return None


def check_inputs_for(
    spec: TaskTypeSpec, uploads: Sequence[Upload], infos: Sequence[imaging.ImageInfo], params: dict[str, Any]
) -> None:
    """What the provider's capabilities say about the inputs: formats, size, the mask."""
    for upload, info in zip(uploads, infos, strict=True):
        label = upload.name or "file"
        if info.content_type not in spec.input_formats:
            raise UnsupportedMediaType(
                f"{label}: {spec.task_type} takes {', '.join(spec.input_formats)}.",
                code="unsupported_image_type",
            )
        if spec.max_input_bytes is not None and upload.size > spec.max_input_bytes:
            raise PayloadTooLarge(
                f"{label} is larger than the {spec.max_input_bytes} bytes {spec.task_type} accepts.",
                code="file_too_large",
            )
    if params.get("mask") is True and spec.supports_mask:
        if len(uploads) < 2:
            raise Unprocessable(
                "With mask=true, upload the image(s) first and the mask as the last file.",
                code="mask_without_image",
            )
        if infos[-1].content_type != "image/png":
            raise Unprocessable(
                "The mask (the last file) must be a PNG, transparent where the image may change.",
                code="invalid_mask",
            )
        first = infos[0]
        if (infos[-1].width, infos[-1].height) != (first.width, first.height):
            raise Unprocessable("The mask must have the same size as the first image.", code="invalid_mask")


# A task number is the seed's "T" + the second + 4 random characters: tasks created in the same
# second collide now and then (with 300 a second, about once in 40 seconds). The insert skips a
# taken number instead of failing (which answered 503, and on PostgreSQL would abort the
# transaction) and the task gets another one. By dialect: ON CONFLICT is written per dialect.
# The insert also takes the id of the task's first event for ``seq`` (``next_event_id``); no row
# comes back when the number is taken.
_INSERT_TASK = {
    dialect: DriverStatement(
        dialect_insert(tables.tasks)
        .values(seq=next_event_id(dialect))
        .on_conflict_do_nothing(index_elements=["task_no"])
        .returning(tables.tasks.c.seq)
    )
    for dialect, dialect_insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}
TASK_NO_ATTEMPTS = 8
_INSERT_ATTEMPT = DriverStatement(insert(tables.task_attempts))
_INSERT_FILES = DriverStatement(insert(tables.task_files))


async def create_task(
    ctx: AppContext,
    session: Transaction,
    user: User,
    task_type: str,
    raw_parameters: str | None,
    uploads: Sequence[Upload],
) -> tuple[Task, list[TaskFile]]:
    """The new task and its input files, as written (instances for reading only)."""
    settings = ctx.settings
    # 1. What is asked, and can anything serve it? (cheap checks first, nothing stored yet)
    if task_type not in KNOWN_TASK_TYPES and ctx.registry.route(task_type) is None:
        raise Unprocessable(
            f"Unknown task type {task_type!r}. See GET /api/task-types for the list.",
            code="unknown_task_type",
        )
    route = ctx.registry.route(task_type)
    if route is None:
        raise Unprocessable(
            f"No configured AI provider can run {task_type!r} tasks on this server.",
            code="task_type_unavailable",
        )
    price = settings.price_of(task_type)
    if price is None:
        raise Unprocessable(f"Task type {task_type!r} has no price configured.", code="task_type_unavailable")
    params_in = parse_parameters(raw_parameters)
    params_in.pop("credits", None)  # the client never says what it pays
    try:
        params = validate_parameters(route.spec, params_in)
    except InvalidParameter as exc:
        raise Unprocessable(exc.message, code="invalid_parameter", parameter=exc.parameter) from None

    # 2. The files: how many (each was checked when it was stored).
    chain = ctx.registry.chain(task_type)
    with_mask = 1 if params.get("mask") is True else 0  # the mask is a file, not an input image
    max_inputs = min(max(r.spec.max_inputs for r in chain) + with_mask, settings.max_files)
    if len(uploads) < route.spec.min_inputs:
        raise Unprocessable(
            f"Upload at least {route.spec.min_inputs} image(s) in the 'files' field.", code="no_files"
        )
    if len(uploads) > max_inputs:
        raise Unprocessable(
            f"{task_type} takes at most {max_inputs} file(s); {len(uploads)} were sent.",
            code="too_many_files",
        )
    infos = [upload.info for upload in uploads]

    # Each provider's own limits: the first of the chain that can take the inputs serves it.
    route = limits.choose_route(
        chain,
        [
            limits.Facts(i.content_type, u.size, i.width, i.height)
            for u, i in zip(uploads, infos, strict=True)
        ],
        params,
    )
    check_inputs_for(route.spec, uploads, infos, params)

    # 3. Write task, attempt, files, the reservation and the first event in one transaction, as
    # Core statements (no ORM flush). The reservation is the race-free balance check (a
    # conditional UPDATE): a refusal (402) rolls the transaction back, and the stored inputs are
    # deleted with it. (No separate read of the balance first: one transaction less per task.)
    now = datetime.now(UTC)
    task_id = new_id()
    task_no = new_task_no(now)
    row: dict[str, Any] = {
        "id": task_id,
        "task_no": task_no,
        "user_id": user.id,
        "task_type": task_type,
        "status": TaskStatus.PENDING,
        "ai_provider": route.provider.name,
        "ai_model": None,
        "ai_task_id": None,
        "input_parameters": params,
        "prompt": default_prompt(task_type, params),
        "result_metadata": None,
        "error_code": None,
        "error_message": None,
        "progress": 0,
        "retry_count": 0,
        "attempt": 1,
        "cost": price,
        "lease_owner": None,
        "lease_expires_at": None,
        "claim_count": 0,
        "dispatched_at": now,
        "started_at": None,
        "completed_at": None,
        "created_at": now,
        "updated_at": now,
    }
    file_rows: list[dict[str, Any]] = [
        {
            "id": new_id(),
            "task_id": task_id,
            "role": "input",
            "attempt": 0,
            "position": position,
            "storage_key": upload.key,
            "content_type": info.content_type,
            "size": upload.size,
            "width": info.width,
            "height": info.height,
            "original_name": (upload.name or "")[:255] or None,
            "created_at": now,
        }
        for position, (upload, info) in enumerate(zip(uploads, infos, strict=True))
    ]
    insert_task = _INSERT_TASK[ctx.db.engine.dialect.name]
    for _ in range(TASK_NO_ATTEMPTS):
        seq = (await execute(session, insert_task, row)).scalar()
        if seq is not None:
            break
        row["task_no"] = task_no = new_task_no(now)  # that number is taken: another one
    else:
        raise RuntimeError(f"no free task number after {TASK_NO_ATTEMPTS} tries")
    await execute(
        session,
        _INSERT_ATTEMPT,
        {
            "id": new_id(),
            "task_id": task_id,
            "attempt": 1,
            "status": "pending",
            "ai_provider": route.provider.name,
            "cost": price,
            "created_at": now,
        },
    )
    if file_rows:
        await execute(session, _INSERT_FILES, file_rows)
    await credits.reserve(session, user.id, task_id, 1, price, task_no)
    row["seq"] = await insert_event(session, task_id, user.id, TaskStatus.PENDING, 0, event_id=seq)
    changed(session, task_id, user.id)
    after_commit(session, lambda: ctx.dispatcher.dispatch([task_id]))
    # What the response shows, built from what was written (not read back).
    return loaded(Task, row), [loaded(TaskFile, f) for f in file_rows]


async def get_owned(session: AsyncSession, user: User, task_id: str, *, for_update: bool = False) -> Task:
    stmt = select(Task).where(Task.id == task_id, Task.user_id == user.id)
    if for_update:
        stmt = stmt.with_for_update()
    task = (await session.execute(stmt)).scalar_one_or_none()
    if task is None:  # someone else's task looks exactly like a missing one
        raise NotFound("Task not found.", code="task_not_found")
    return task


async def files_of(session: AsyncSession, tasks: Sequence[Task]) -> dict[str, list[TaskFile]]:
    """Inputs and the outputs of each task's current attempt, in order."""
    if not tasks:
        return {}
    rows = await session.scalars(
        select(TaskFile).where(TaskFile.task_id.in_([t.id for t in tasks])).order_by(TaskFile.position)
    )
    current = {t.id: t.attempt for t in tasks}
    out: dict[str, list[TaskFile]] = {t.id: [] for t in tasks}
    for f in rows:
        if f.role == "input" or f.attempt == current[f.task_id]:
            out[f.task_id].append(f)
    return out


async def attempts_of(session: AsyncSession, task: Task) -> list[TaskAttempt]:
    rows = await session.scalars(
        select(TaskAttempt).where(TaskAttempt.task_id == task.id).order_by(TaskAttempt.attempt)
    )
    return list(rows)


async def list_tasks(
    session: AsyncSession, user: User, *, limit: int, offset: int, status: str | None
) -> tuple[list[Task], int]:
    cond = [Task.user_id == user.id]
    if status:
        cond.append(Task.status == status)
    total = await session.scalar(select(func.count()).select_from(Task).where(*cond))
    rows = await session.scalars(
        select(Task).where(*cond).order_by(Task.created_at.desc(), Task.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def retry_task(ctx: AppContext, session: AsyncSession, user: User, task_id: str) -> Task:
    task = await get_owned(session, user, task_id, for_update=True)
    if task.status != TaskStatus.FAILED:
        raise Conflict(
            f"Only a failed task can be retried; this one is {task.status}.", code="task_not_retryable"
        )
    if task.retry_count >= ctx.settings.max_retries:
        raise Conflict(
            f"This task was already retried {task.retry_count} times, the most allowed.",
            code="retry_limit_reached",
        )
    route = ctx.registry.route(task.task_type)
    if route is None:
        raise Unprocessable(
            f"No configured AI provider can run {task.task_type!r} tasks any more.",
            code="task_type_unavailable",
        )
    price = ctx.settings.price_of(task.task_type) or 0
    now = datetime.now(UTC)
    task.attempt += 1
    task.retry_count += 1
    task.status = TaskStatus.PENDING
    task.ai_provider = route.provider.name
    task.ai_task_id = task.ai_model = None  # a new attempt never resumes the last one's request
    task.cost = price
    task.progress = 0
    task.error_code = task.error_message = None
    task.lease_owner = None
    task.lease_expires_at = None
    task.claim_count = 0
    task.completed_at = None
    task.dispatched_at = now
    task.updated_at = now
    session.add(
        TaskAttempt(task_id=task.id, attempt=task.attempt, ai_provider=route.provider.name, cost=price)
    )
    await session.flush()
    await credits.reserve(session, user.id, task.id, task.attempt, price, task.task_no)
    await touch(session, task)
    after_commit(session, lambda: ctx.dispatcher.dispatch([task.id]))
    return task


async def cancel_task(session: AsyncSession, user: User, task_id: str) -> Task:
    task = await get_owned(session, user, task_id, for_update=True)
    if task.status not in ACTIVE_STATUSES:
        raise Conflict(
            f"Only a pending or processing task can be canceled; this one is {task.status}.",
            code="task_not_cancelable",
        )
    now = datetime.now(UTC)
    task.status = TaskStatus.CANCELED
    task.error_code = "canceled"
    task.error_message = "Canceled by the user."
    task.lease_owner = None
    task.lease_expires_at = None
    task.completed_at = now
    task.updated_at = now
    await close_attempt(session, task, "canceled", now)
    await credits.release(session, task.user_id, task.id, task.attempt, task.cost, task.task_no, "canceled")
    await touch(session, task)
    return task
