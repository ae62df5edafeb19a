"""A task's input files: checked, then stored under keys of ours, before the task is created.

Multipart files arrive as staging files (``uploads/form.py``): each is checked on the file itself
(type from the magic bytes, pixel count from the header, structure; mapped read-only in a worker
thread) while its fsync, started when its part ended, runs in another; once it is durable it is
moved into storage (local: a rename; S3: an upload from the file). Files of at most
``form.SMALL_FILE_BYTES`` arrive in memory instead: checked at once, stored with one write. Direct
uploads (``uploads/service.py``) arrive as bytes. Every stored key is deleted again when the
request's transaction rolls back (any refusal after this point included).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from darkroom import imaging
from darkroom.context import AppContext
from darkroom.db import Transaction
from darkroom.errors import DarkroomError, Unprocessable, UnsupportedMediaType
from darkroom.storage.keys import new_key
from darkroom.storage.staging import SmallFile, StagedFile
from darkroom.tasks.service import Upload
from darkroom.uow import on_rollback


def refusal(label: str, exc: imaging.ImageRejected) -> DarkroomError:
    if exc.code == "empty_file":
        return Unprocessable(f"{label} is empty.", code="empty_file")
    error = UnsupportedMediaType if exc.code == "unsupported_image_type" else Unprocessable
    return error(f"{label}: {exc.message}", code=exc.code)


async def store_staged(
    ctx: AppContext, session: Transaction, staged: Sequence[StagedFile | SmallFile]
) -> list[Upload]:
    """Check every file, then store them all, each once it is durable. A refusal stores nothing.

    A staged file is checked in a worker thread and moved into storage; a small one (in memory)
    is checked here, at once, and written under its key (``Storage.put``: it is durable when that
    returns)."""
    infos = []
    max_pixels = ctx.settings.max_pixels
    for f in staged:
        try:
            if isinstance(f, SmallFile):
                infos.append(imaging.check_upload(f.data, max_pixels))
            else:
                infos.append(await asyncio.to_thread(imaging.check_upload_file, f.path, max_pixels))
        except imaging.ImageRejected as exc:
            raise refusal(f.name or "file", exc) from None
    out = []
    for f, info in zip(staged, infos, strict=True):
        key = new_key("inputs", f.name, info.content_type)
        on_rollback(session, partial(ctx.storage.delete, key))
        if isinstance(f, SmallFile):
            await ctx.storage.put(key, f.data, info.content_type)
        else:
            await f.durable()  # never under its key (nor in a committed task) before it is on disk
            await ctx.storage.put_file(key, f.path, info.content_type)
        out.append(Upload(name=f.name, key=key, size=f.size, info=info))
    return out


async def store_bytes(
    ctx: AppContext, session: Transaction, name: str | None, data: bytes, info: imaging.ImageInfo
) -> Upload:
    """Store an already checked file that is in memory (a direct upload's object)."""
    key = new_key("inputs", name, info.content_type)
    on_rollback(session, partial(ctx.storage.delete, key))
    await ctx.storage.put(key, data, info.content_type)
    return Upload(name=name, key=key, size=len(data), info=info)
