from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, utcnow
from darkroom.models.credit_transaction import LedgerId


class TaskEvent(Base):
    """A visible change of a task. ``id`` is the global sequence number (``seq``), given when the
    row is inserted. ``position`` is its place in the event streams: on PostgreSQL, where
    transactions that took ids 10 and 11 may commit as 11 then 10, a trigger numbers the events
    in commit order at commit time (migration 0005), so a stream that has read position N never
    gets an event below N later. On SQLite (one writer at a time) ids are in commit order
    already: ``position`` stays NULL and streams use ``id`` (``events.stream.cursor_column``)."""

    __tablename__ = "task_events"
    __table_args__ = (Index("ix_task_events_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("ai_tasks.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # status | progress
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
