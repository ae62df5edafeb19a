"""Thumbnails: signed, expiring URLs for small previews of stored images, cached on local disk.

Any storage backend works: the original is read through the Storage interface once, the preview
is written to ``DATA_DIR/cache/thumbs`` and served from there afterwards. Only a few sizes exist
(``SIZES``), so a URL cannot be used to make the server render arbitrary sizes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from darkroom import imaging
from darkroom.context import AppContext
from darkroom.deps import Context
from darkroom.errors import NotFound
from darkroom.storage.base import ObjectNotFound
from darkroom.storage.keys import is_valid_key
from darkroom.storage.signing import UrlSigner

SIZES = (320, 1280)

router = APIRouter(tags=["files"])


@lru_cache(maxsize=4)
def _signer(secret: str) -> UrlSigner:
    return UrlSigner("thumbnail\x00" + secret)


def thumbnail_url(ctx: AppContext, key: str, size: int) -> str:
    """A path (relative to the server) that serves the preview of ``key`` at ``size`` px."""
    expires, sig = _signer(ctx.settings.secret_key).sign(f"{size}:{key}", ctx.settings.file_url_ttl)
    return f"/thumbs/{size}/{quote(key)}?expires={expires}&sig={sig}"  # digits and hex


def _cache_path(ctx: AppContext, key: str, size: int) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return ctx.settings.data_dir / "cache" / "thumbs" / digest[:2] / f"{digest}-{size}"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def cached_thumbnail(ctx: AppContext, key: str, size: int) -> tuple[Path, str]:
    """The preview's path on disk and its media type, rendering it on first use."""
    base = _cache_path(ctx, key, size)
    for ext, media in (("jpg", imaging.JPEG), ("png", imaging.PNG)):
        path = base.with_suffix(f".{ext}")
        if path.is_file():
            return path, media
    try:
        original = await ctx.storage.get(key)
    except ObjectNotFound:
        raise NotFound("The file no longer exists.", code="file_not_found") from None
    try:
        data = await asyncio.to_thread(imaging.thumbnail, original, size, max_pixels=ctx.settings.max_pixels)
    except imaging.ImageRejected:
        raise NotFound("This file has no preview.", code="file_not_found") from None
    media = imaging.PNG if data.startswith(b"\x89PNG") else imaging.JPEG
    path = base.with_suffix(".png" if media == imaging.PNG else ".jpg")
    await asyncio.to_thread(_write, path, data)
    return path, media


@router.get("/thumbs/{size}/{key:path}", response_class=FileResponse)
async def get_thumbnail(
    size: int,
    key: str,
    ctx: Context,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=128)],
) -> FileResponse:
    """A small preview of a stored image, by the signed link found in the owner's task JSON."""
    signer = _signer(ctx.settings.secret_key)
    if size not in SIZES or not is_valid_key(key) or not signer.verify(f"{size}:{key}", expires, sig):
        raise NotFound(
            "This link is invalid or has expired; fetch the task again for a fresh one.",
            code="file_not_found",
        )
    path, media = await cached_thumbnail(ctx, key, size)
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=media, headers=headers)
