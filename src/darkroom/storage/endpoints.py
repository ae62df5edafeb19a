from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from darkroom.deps import Context
from darkroom.errors import Forbidden, NotFound
from darkroom.storage.keys import EXTENSIONS, clean_name
from darkroom.storage.local import LocalStorage, upload_claim
from darkroom.storage.staging import StagingFile

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


@router.put(
    "/files/{key:path}",
    status_code=200,
    response_class=Response,
    responses={403: {"description": "Bad or expired upload URL, or not what it was signed for"}},
)
async def put_file(
    key: str,
    request: Request,
    ctx: Context,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=128)],
    content_type: Annotated[str, Query(alias="contentType", max_length=64)],
    size: Annotated[int, Query(gt=0)],
) -> Response:
    """A direct upload with local storage: the URL from ``POST /api/uploads``, like a presigned S3
    PUT. The signature covers the key, the content type and the exact length."""
    storage = ctx.storage
    if (
        not isinstance(storage, LocalStorage)
        or content_type not in EXTENSIONS
        or not storage.signer.verify(upload_claim(key, content_type, size), expires, sig)
    ):
        raise Forbidden(
            "This upload URL is invalid or has expired; ask for a new one.", code="upload_url_invalid"
        )
    sent_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if sent_type != content_type:
        raise Forbidden(
            f"This URL accepts Content-Type {content_type} only, not {sent_type or 'none'}.",
            code="upload_content_type_mismatch",
        )
    # Streamed to a staging file and renamed into place, like a multipart upload (uploads/form.py).
    staging = StagingFile(storage.staging_dir, None)
    try:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > size:
                break
            await staging.write(chunk)
        if received != size:
            sent = "more" if received > size else received
            raise Forbidden(
                f"This URL accepts exactly {size} bytes; {sent} were sent.",
                code="upload_length_mismatch",
            )
        staged = await staging.finish()
        await storage.put_file(key, staged.path, content_type)
    finally:
        staging.discard()  # a no-op once the file was moved into place
    return Response(status_code=200)
