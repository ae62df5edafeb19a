from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, new_id, utcnow


class TaskAttempt(Base):
    """One try at a task: the first run and each retry. Kept for history."""

    __tablename__ = "task_attempts"
    __table_args__ = (UniqueConstraint("task_id", "attempt"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # no index of its own: the unique constraint above starts with it (migration 0006)
    task_id: Mapped[str] = mapped_column(String(36), ForeignKey("ai_tasks.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    ai_provider: Mapped[str | None] = mapped_column(String(48))
    cost: Mapped[int] = mapped_column(default=0)
    error_code: Mapped[str | None] = mapped_column(String(48))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
