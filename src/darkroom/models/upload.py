from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, new_id, utcnow


class Upload(Base):
    """A direct upload the server handed out a PUT URL for (``POST /api/uploads``).

    ``pending`` until a task takes it (``used``, with the task's id); the object itself is copied
    into the task's inputs and deleted, so nothing the client can still PUT to is ever a task input.
    """

    __tablename__ = "uploads"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'used')", name="status_valid"),
        CheckConstraint("size > 0", name="size_positive"),
        Index("ix_uploads_status_expires", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    storage_key: Mapped[str] = mapped_column(String(512), unique=True)
    original_name: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]
    status: Mapped[str] = mapped_column(String(8), default="pending")
    task_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
