from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, utcnow
from darkroom.models.credit_transaction import LedgerId


class TaskEvent(Base):
    """A visible change of a task. ``id`` is the global, monotonic sequence number (``seq``)."""

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
