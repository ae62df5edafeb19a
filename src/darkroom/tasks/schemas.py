from __future__ import annotations

from datetime import datetime
from typing import Any

from darkroom.schemas import CamelModel


class FileRead(CamelModel):
    url: str
    download_url: str
    content_type: str
    size: int
    width: int
    height: int
    name: str | None = None
    thumbnail_url: str | None = None
    preview_url: str | None = None


class AttemptRead(CamelModel):
    attempt: int
    status: str
    ai_provider: str | None
    cost: int
    error_code: str | None
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TaskRead(CamelModel):
    id: str
    task_no: str
    status: str
    task_type: str
    ai_provider: str
    ai_model: str | None
    ai_task_id: str | None = None  # the provider's request id (prediction, generation, prompt)
    input_files: list[str]
    inputs: list[FileRead]
    input_parameters: dict[str, Any]
    prompt: str | None
    result_urls: list[str]
    results: list[FileRead]
    error_code: str | None
    error_message: str | None
    progress: int
    retry_count: int
    attempt: int
    cost: int
    seq: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    attempts: list[AttemptRead] | None = None


class TaskStatusRead(CamelModel):
    id: str
    task_no: str
    status: str
    progress: int
    result_urls: list[str]
    error_code: str | None
    error_message: str | None
    retry_count: int
    seq: int
    updated_at: datetime


class ParameterRead(CamelModel):
    type: str
    allowed: list[Any] | None
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""


class TaskTypeRead(CamelModel):
    task_type: str
    description: str
    available: bool
    price: int | None
    provider: str | None
    providers: list[str]
    min_files: int
    max_files: int
    parameters: dict[str, ParameterRead]
