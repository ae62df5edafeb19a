"""Direct uploads. Never commits.

``create_uploads`` records what the client announced (type, exact size) and hands out a PUT URL
bound to both. ``take`` is called by task creation: it checks each upload belongs to the user and
is unused, that the object exists with the announced size, and what the bytes really are (type
from the magic bytes, pixel count from the header, then the file's structure). A refused object is
deleted at once. An accepted one is copied under a key of ours (``uploads/inputs.py``) and handed
to task creation like a multipart file; the uploaded object is deleted after the commit, so a
client that still holds the PUT URL can never change a task's input.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from darkroom import imaging
from darkroom.context import AppContext
from darkroom.errors import (
    Conflict,
    DarkroomError,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from darkroom.models import Upload, User
from darkroom.storage.keys import EXTENSIONS, new_key
from darkroom.tasks.service import Upload as FileUpload
from darkroom.uow import after_commit
from darkroom.uploads import inputs
from darkroom.uploads.schemas import UploadFileRequest, UploadRead


async def create_uploads(
    ctx: AppContext, session: AsyncSession, user: User, files: Sequence[UploadFileRequest]
) -> list[UploadRead]:
    settings = ctx.settings
    if len(files) > settings.max_files:
        raise Unprocessable(
            f"At most {settings.max_files} files per request; {len(files)} were asked for.",
            code="too_many_files",
        )
    for f in files:
        label = f.name or "file"
        if f.content_type not in EXTENSIONS:
            raise UnsupportedMediaType(
                f"{label}: only image/jpeg, image/png and image/webp can be uploaded.",
                code="unsupported_image_type",
            )
        if f.size > settings.max_file_bytes:
            raise PayloadTooLarge(
                f"{label} is {f.size / 2**20:.1f} MB; the limit is {settings.max_file_mb:g} MB per file.",
                code="file_too_large",
            )
    now = datetime.now(UTC)
    ttl = settings.upload_url_ttl
    out = []
    for f in files:
        key = new_key("uploads", f.name, f.content_type)
        row = Upload(
            user_id=user.id,
            storage_key=key,
            original_name=(f.name or "")[:255] or None,
            content_type=f.content_type,
            size=f.size,
            status="pending",
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        session.add(row)
        await session.flush()
        put = ctx.storage.presign_put(key, content_type=f.content_type, size=f.size, expires_in=ttl)
        out.append(
            UploadRead(
                upload_id=row.id,
                name=row.original_name,
                content_type=f.content_type,
                size=f.size,
                url=put.url,
                headers=put.headers,
                expires_at=row.expires_at,
            )
        )
    return out


async def _refuse(ctx: AppContext, key: str, error: DarkroomError) -> DarkroomError:
    with contextlib.suppress(Exception):
        await ctx.storage.delete(key)
    return error


async def _check(ctx: AppContext, session: AsyncSession, row: Upload) -> FileUpload:
    """The object behind one upload, checked and copied; refused objects are deleted."""
    settings = ctx.settings
    label = row.original_name or "upload"
    info = await ctx.storage.stat(row.storage_key)
    if info is None:
        raise Unprocessable(
            f"{label}: nothing was uploaded yet; PUT the file to its upload URL first.", code="upload_missing"
        )
    if info.size != row.size or info.size > settings.max_file_bytes:
        raise await _refuse(
            ctx,
            row.storage_key,
            Unprocessable(
                f"{label}: {info.size} bytes were uploaded, {row.size} were announced.",
                code="upload_size_mismatch",
            ),
        )
    data = await ctx.storage.get(row.storage_key)
    try:
        image = await asyncio.to_thread(imaging.check_upload, data, settings.max_pixels)
    except imaging.ImageRejected as exc:
        error = UnsupportedMediaType if exc.code == "unsupported_image_type" else Unprocessable
        raise await _refuse(ctx, row.storage_key, error(f"{label}: {exc.message}", code=exc.code)) from None
    if image.content_type != row.content_type:
        raise await _refuse(
            ctx,
            row.storage_key,
            UnsupportedMediaType(
                f"{label} was announced as {row.content_type} but is {image.content_type}.",
                code="upload_type_mismatch",
            ),
        )
    return await inputs.store_bytes(ctx, session, row.original_name, data, image)


async def take(
    ctx: AppContext, session: AsyncSession, user: User, upload_ids: Sequence[str]
) -> tuple[list[FileUpload], list[Upload]]:
    """Check the user's uploads and return their files for task creation. ``mark_used`` must be
    called in the same transaction once the task exists."""
    ids = list(dict.fromkeys(i.strip() for i in upload_ids if i.strip()))
    if len(ids) > ctx.settings.max_files:
        raise Unprocessable(
            f"At most {ctx.settings.max_files} files per task; {len(ids)} uploads were given.",
            code="too_many_files",
        )
    # Reads and object checks in a read transaction of their own: the write lock (SQLite) is
    # taken only for the short write at the end.
    async with ctx.db.transaction(write=False) as read:
        rows = {r.id: r for r in await read.scalars(select(Upload).where(Upload.id.in_(ids)))}
    for upload_id in ids:
        row = rows.get(upload_id)
        if row is None or row.user_id != user.id:  # someone else's upload looks like a missing one
            raise NotFound(f"Upload {upload_id} not found.", code="upload_not_found")
        if row.status != "pending":
            raise Conflict(f"Upload {upload_id} was already used by a task.", code="upload_already_used")
    files = [await _check(ctx, session, rows[i]) for i in ids]
    return files, [rows[i] for i in ids]


async def mark_used(ctx: AppContext, session: AsyncSession, uploads: Sequence[Upload], task_id: str) -> None:
    """Conditional, so two requests racing for one upload can't both use it."""
    if not uploads:
        return
    ids = [u.id for u in uploads]
    result = await session.execute(
        update(Upload)
        .where(Upload.id.in_(ids), Upload.status == "pending")
        .values(status="used", task_id=task_id)
        .returning(Upload.id)
    )
    if len(result.scalars().all()) != len(ids):
        raise Conflict("An upload was used by another task meanwhile.", code="upload_already_used")
    keys = [u.storage_key for u in uploads]

    async def delete_objects() -> None:
        for key in keys:
            with contextlib.suppress(Exception):
                await ctx.storage.delete(key)

    after_commit(session, delete_objects)


UNUSED_UPLOAD_KEEP = timedelta(hours=24)


async def sweep_unused(ctx: AppContext, *, keep: timedelta = UNUSED_UPLOAD_KEEP, limit: int = 200) -> int:
    """Delete uploads nobody used, ``keep`` after their URL expired: the object, then the row.
    Runs with the reaper; on PostgreSQL ``SKIP LOCKED`` keeps concurrent sweepers apart."""
    cutoff = datetime.now(UTC) - keep
    async with ctx.db.transaction() as session:
        rows = list(
            await session.scalars(
                select(Upload)
                .where(Upload.status == "pending", Upload.expires_at < cutoff)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            await ctx.storage.delete(row.storage_key)  # idempotent; a failure keeps the row for next time
            await session.delete(row)
    return len(rows)
