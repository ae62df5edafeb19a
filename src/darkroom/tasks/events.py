"""Every visible change of a task goes through ``touch``: it appends a TaskEvent whose id becomes
the task's ``seq`` (used by event streams and ETags) and wakes local listeners after commit."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from darkroom.models import Task, TaskAttempt, TaskEvent
from darkroom.uow import after_commit, on_rollback


async def touch(session: AsyncSession, task: Task, kind: str = "status") -> None:
    event = TaskEvent(
        task_id=task.id, user_id=task.user_id, kind=kind, status=task.status, progress=task.progress
    )
    session.add(event)
    await session.flush()
    task.seq = event.id
    session.info.setdefault("changed_tasks", set()).add(task.id)
    users: set[str] | None = session.info.get("changed_users")
    if users is None:
        users = session.info["changed_users"] = set()
        after_commit(session, partial(_wake_listeners, session.info))
        on_rollback(session, partial(_forget, session.info))
    users.add(task.user_id)


async def _forget(info: dict[str, Any]) -> None:
    info.pop("changed_users", None)
    info.pop("changed_tasks", None)


async def _wake_listeners(info: dict[str, Any]) -> None:
    """After commit: wake this process's event streams of the users whose tasks changed."""
    hub = info.get("event_hub")
    users = info.pop("changed_users", set())
    info.pop("changed_tasks", None)
    if hub is not None:
        hub.notify(users)


async def close_attempt(session: AsyncSession, task: Task, status: str, now: datetime) -> None:
    """Record how the task's current attempt ended (history kept across retries).
    One UPDATE, no read of the attempt row first (one statement less per finished task)."""
    await session.execute(
        update(TaskAttempt)
        .where(TaskAttempt.task_id == task.id, TaskAttempt.attempt == task.attempt)
        .values(status=status, finished_at=now, error_code=task.error_code, error_message=task.error_message)
        .execution_options(synchronize_session=False)
    )
