from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from darkroom.deps import Context
from darkroom.errors import NotFound
from darkroom.storage.keys import clean_name
from darkroom.storage.local import LocalStorage

router = APIRouter(tags=["files"])


@router.get(
    "/files/{key:path}", response_class=FileResponse, responses={404: {"description": "Bad or expired link"}}
)
async def get_file(
    key: str,
    ctx: Context,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=128)],
    download: Annotated[str | None, Query(max_length=200)] = None,
) -> FileResponse:
    """A stored image, by the signed, expiring link found in the owner's task JSON."""
    storage = ctx.storage
    if not isinstance(storage, LocalStorage) or not storage.signer.verify(key, expires, sig):
        raise NotFound(
            "This link is invalid or has expired; fetch the task again for a fresh one.",
            code="file_not_found",
        )
    path = storage.path_of(key)
    if not path.is_file():
        raise NotFound("The file no longer exists.", code="file_not_found")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if download:
        stem, _, ext = download.rpartition(".")
        name = f"{clean_name(stem or download)}.{clean_name(ext) if stem else path.suffix.lstrip('.')}"
        return FileResponse(path, media_type=media_type, headers=headers, filename=name)
    return FileResponse(path, media_type=media_type, headers=headers)
