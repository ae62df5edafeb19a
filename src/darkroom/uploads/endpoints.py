from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from darkroom.deps import Context, CurrentUser, Session
from darkroom.schemas import Envelope, ok
from darkroom.uploads import service
from darkroom.uploads.schemas import UploadRead, UploadRequest

router = APIRouter(prefix="/api", tags=["uploads"])


@router.post("/uploads", status_code=201, response_model=Envelope[list[UploadRead]])
async def create_uploads(
    body: UploadRequest, request: Request, user: CurrentUser, session: Session, ctx: Context
) -> dict[str, Any]:
    """Upload URLs, one per file: ``PUT`` the exact bytes with the given headers before the URL
    expires, then create a task with ``uploadIds`` instead of ``files``."""
    uploads = await service.create_uploads(ctx, session, user, body.files)
    base = (ctx.settings.app_url or str(request.base_url)).rstrip("/")
    for upload in uploads:
        if "://" not in upload.url:  # local storage: our own endpoint
            upload.url = base + upload.url
    return ok([u.model_dump(by_alias=True, mode="json") for u in uploads], "Upload URLs created")
