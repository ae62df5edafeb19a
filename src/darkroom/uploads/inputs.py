"""A task's input files: checked, then stored under keys of ours, before the task is created.

Multipart files arrive as staging files (``uploads/form.py``): each is checked on the file itself
(type from the magic bytes, pixel count from the header, structure; mapped read-only in a worker
thread) while its fsync, started when its part ended, runs in another; once it is durable it is
moved into storage (local: a rename; S3: an upload from the file). Direct
uploads (``uploads/service.py``) arrive as bytes. Every stored key is deleted again when the
request's transaction rolls back (any refusal after this point included).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from darkroom import imaging
from darkroom.context import AppContext
from darkroom.errors import DarkroomError, Unprocessable, UnsupportedMediaType
from darkroom.storage.keys import new_key
from darkroom.storage.staging import StagedFile
from darkroom.tasks.service import Upload
from darkroom.uow import on_rollback


def refusal(label: str, exc: imaging.ImageRejected) -> DarkroomError:
    if exc.code == "empty_file":
        return Unprocessable(f"{label} is empty.", code="empty_file")
    error = UnsupportedMediaType if exc.code == "unsupported_image_type" else Unprocessable
    return error(f"{label}: {exc.message}", code=exc.code)


async def store_staged(ctx: AppContext, session: AsyncSession, staged: Sequence[StagedFile]) -> list[Upload]:
    """Check every staged file, then store them all, each once it is durable. A refusal stores
    nothing."""
    infos = []
    for f in staged:
        try:
            infos.append(await asyncio.to_thread(imaging.check_upload_file, f.path, ctx.settings.max_pixels))
        except imaging.ImageRejected as exc:
            raise refusal(f.name or "file", exc) from None
    out = []
    for f, info in zip(staged, infos, strict=True):
        key = new_key("inputs", f.name, info.content_type)
        await f.durable()  # never under its key (nor in a committed task) before it is on disk
        on_rollback(session, partial(ctx.storage.delete, key))
        await ctx.storage.put_file(key, f.path, info.content_type)
        out.append(Upload(name=f.name, key=key, size=f.size, info=info))
    return out


async def store_bytes(
    ctx: AppContext, session: AsyncSession, name: str | None, data: bytes, info: imaging.ImageInfo
) -> Upload:
    """Store an already checked file that is in memory (a direct upload's object)."""
    key = new_key("inputs", name, info.content_type)
    on_rollback(session, partial(ctx.storage.delete, key))
    await ctx.storage.put(key, data, info.content_type)
    return Upload(name=name, key=key, size=len(data), info=info)
