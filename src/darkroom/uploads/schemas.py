from __future__ import annotations

from datetime import datetime

from pydantic import Field

from darkroom.schemas import CamelModel


class UploadFileRequest(CamelModel):
    name: str | None = Field(None, max_length=255, description="Shown in the task; never used in a path")
    content_type: str = Field(description="image/jpeg, image/png or image/webp")
    size: int = Field(gt=0, description="Exact size in bytes; the upload URL accepts only this many")


class UploadRequest(CamelModel):
    files: list[UploadFileRequest] = Field(min_length=1)


class UploadRead(CamelModel):
    upload_id: str
    name: str | None
    content_type: str
    size: int
    method: str = "PUT"
    url: str
    headers: dict[str, str]
    expires_at: datetime
