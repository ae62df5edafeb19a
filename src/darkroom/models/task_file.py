from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, new_id, utcnow


class TaskFile(Base):
    """An input or output image of a task; ``storage_key`` is ours, never a client's file name."""

    __tablename__ = "task_files"
    __table_args__ = (UniqueConstraint("task_id", "role", "attempt", "position"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # no index of its own: the unique constraint above starts with it (migration 0006)
    task_id: Mapped[str] = mapped_column(String(36), ForeignKey("ai_tasks.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(8))  # input | output
    attempt: Mapped[int] = mapped_column(default=0)  # 0 for inputs; the attempt that made an output
    position: Mapped[int]
    storage_key: Mapped[str] = mapped_column(String(512), unique=True)
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]
    width: Mapped[int]
    height: Mapped[int]
    original_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
