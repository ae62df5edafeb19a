from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, TimestampMixin, new_id


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


ACTIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.PROCESSING)
FINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED)


class Task(TimestampMixin, Base):
    """An AI task (the seed's ``ai_tasks``), its current attempt and its lease."""

    __tablename__ = "ai_tasks"
    __table_args__ = (
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
        CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'canceled')", name="status_valid"
        ),
        Index("ix_ai_tasks_user_created", "user_id", "created_at"),
        Index("ix_ai_tasks_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_no: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    task_type: Mapped[str] = mapped_column(String(48))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    ai_provider: Mapped[str] = mapped_column(String(48))
    ai_model: Mapped[str | None] = mapped_column(String(120))
    ai_task_id: Mapped[str | None] = mapped_column(String(255))
    input_parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prompt: Mapped[str | None] = mapped_column(Text)
    result_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(48))
    error_message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int] = mapped_column(default=0)
    retry_count: Mapped[int] = mapped_column(default=0)
    attempt: Mapped[int] = mapped_column(default=1)
    cost: Mapped[int] = mapped_column(default=0)
    # Execution bookkeeping: who holds the task and until when; how often it was claimed.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    claim_count: Mapped[int] = mapped_column(default=0)
    dispatched_at: Mapped[datetime | None]
    # Bumped on every visible change; events and ETags use it.
    seq: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
