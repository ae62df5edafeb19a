"""Task rows → API JSON, with signed, expiring file URLs usable by the owner only."""

from __future__ import annotations

from collections.abc import Sequence

from darkroom.context import AppContext
from darkroom.models import Task, TaskAttempt, TaskFile
from darkroom.storage.keys import EXTENSIONS
from darkroom.storage.thumbnails import thumbnail_url
from darkroom.tasks.schemas import AttemptRead, FileRead, TaskRead


def _absolute(base: str, url: str) -> str:
    return url if "://" in url else base.rstrip("/") + url


def file_url(ctx: AppContext, base: str, key: str, download_name: str | None = None) -> str:
    """A signed, expiring URL for the stored object, absolute against ``base``."""
    url = ctx.storage.url(key, expires_in=ctx.settings.file_url_ttl, download_name=download_name)
    return _absolute(ctx.settings.app_url or base, url)


def _file(ctx: AppContext, base: str, task: Task, f: TaskFile) -> FileRead:
    ext = EXTENSIONS.get(f.content_type, "bin")
    download = f"{task.task_no}_{f.role}_{f.position + 1}.{ext}"
    return FileRead(
        url=file_url(ctx, base, f.storage_key),
        download_url=file_url(ctx, base, f.storage_key, download),
        content_type=f.content_type,
        size=f.size,
        width=f.width,
        height=f.height,
        name=f.original_name,
        thumbnail_url=_absolute(ctx.settings.app_url or base, thumbnail_url(ctx, f.storage_key, 320)),
        preview_url=_absolute(ctx.settings.app_url or base, thumbnail_url(ctx, f.storage_key, 1280)),
    )


def present(
    ctx: AppContext,
    base: str,
    task: Task,
    files: Sequence[TaskFile],
    attempts: Sequence[TaskAttempt] | None = None,
) -> TaskRead:
    """``base`` is the URL clients reach us at (the request's, unless APP_URL says otherwise)."""
    inputs = [_file(ctx, base, task, f) for f in files if f.role == "input"]
    results = [_file(ctx, base, task, f) for f in files if f.role == "output"]
    return TaskRead(
        id=task.id,
        task_no=task.task_no,
        status=task.status,
        task_type=task.task_type,
        ai_provider=task.ai_provider,
        ai_model=task.ai_model,
        ai_task_id=task.ai_task_id,
        input_files=[f.url for f in inputs],
        inputs=inputs,
        input_parameters=task.input_parameters,
        prompt=task.prompt,
        result_urls=[f.url for f in results],
        results=results,
        error_code=task.error_code,
        error_message=task.error_message,
        progress=task.progress,
        retry_count=task.retry_count,
        attempt=task.attempt,
        cost=task.cost,
        seq=task.seq,
        created_at=task.created_at,
        started_at=task.started_at,
        completed_at=task.completed_at,
        updated_at=task.updated_at,
        attempts=[AttemptRead.model_validate(a) for a in attempts] if attempts is not None else None,
    )
