"""Declarative base: constraint naming convention, UTC timestamps, string ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, MetaData, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; naive UTC on disk so SQLite compares them as text correctly."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, :func:`sqlite_text` in one step; elsewhere ``process_bind_param`` and then
        the dialect's own processing, as for any ``TypeDecorator``."""
        if dialect.name == "sqlite":
            return sqlite_text
        return super().bind_processor(dialect)


def sqlite_text(value: datetime | None) -> str | None:
    """The text SQLite stores for a UTC column: ``process_bind_param(value)`` as SQLAlchemy's SQLite
    ``DATETIME`` writes it (``YYYY-MM-DD HH:MM:SS.ffffff``, microseconds always), through
    ``datetime.isoformat``. SQLAlchemy's formats a dict of the seven fields with ``%``, after the
    ``TypeDecorator``'s own call: 2.6 → 1.1 µs per value, ~40 µs of the event loop's ~4 ms per task
    in bench figure 3 (27 timestamps per task; bench/FINDINGS.md, twelfth pass)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:  # our own timestamps are in UTC already (``utcnow``)
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without "+00:00" (``replace`` costs more)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


B = TypeVar("B", bound=Base)


def loaded(cls: type[B], values: Mapping[str, Any]) -> B:
    """An instance of ``cls`` holding ``values`` as if loaded from its row, for reading only (a
    response built from what was just written, ``tasks.service.create_task``). The constructor
    fires an attribute event per column, ~75 µs for a ``Task`` against ~4 µs here (bench figure 3).
    Not for adding to a session: nothing is recorded as changed."""
    mapper = cls.__mapper__
    if not mapper.configured:
        configure_mappers()
    instance: B = mapper.class_manager.new_instance()
    instance.__dict__.update(values)
    return instance
