"""Shared API shapes: camelCase models, pagination and the ``{success, data, message}`` envelope."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Pagination(CamelModel):
    total: int
    limit: int
    offset: int
    has_more: bool

    @classmethod
    def of(cls, total: int, limit: int, offset: int) -> Pagination:
        return cls(total=total, limit=limit, offset=offset, has_more=offset + limit < total)


T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    success: bool = True
    data: T
    message: str | None = None


class PageEnvelope(Envelope[T], Generic[T]):
    pagination: Pagination


class ErrorBody(BaseModel):
    success: bool = False
    code: str
    message: str
    details: Any | None = None


def ok(data: Any, message: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "data": data, "message": message}
    body.update(extra)
    return body
