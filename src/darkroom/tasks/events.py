"""Every visible change of a task goes through ``touch`` (ORM) or ``record`` (Core): it appends a
TaskEvent whose id becomes the task's ``seq`` (used by event streams and ETags) and wakes local
listeners after commit."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from darkroom.db import DriverStatement, Transaction, execute
from darkroom.models import Task, TaskEvent
from darkroom.models.tables import task_attempts, task_events, tasks
from darkroom.uow import after_commit, on_rollback


async def touch(session: AsyncSession, task: Task, kind: str = "status") -> None:
    event = TaskEvent(
        task_id=task.id, user_id=task.user_id, kind=kind, status=task.status, progress=task.progress
    )
    session.add(event)
    await session.flush()
    task.seq = event.id
    changed(session, task.id, task.user_id)


# Built once: a statement object reused keeps its compiled form's cache key (SQLAlchemy memoizes
# it on the object), so the hot paths neither rebuild nor re-traverse it on every execution.
_INSERT_EVENT = DriverStatement(insert(task_events).returning(task_events.c.id))
_SET_SEQ = DriverStatement(
    update(tasks).where(tasks.c.id == bindparam("b_task_id")).values(seq=bindparam("b_seq"))
)
_END_ATTEMPT = DriverStatement(
    update(task_attempts)
    .where(
        task_attempts.c.task_id == bindparam("b_task_id"), task_attempts.c.attempt == bindparam("b_attempt")
    )
    .values(
        status=bindparam("b_status"),
        finished_at=bindparam("b_now"),
        error_code=bindparam("b_error_code"),
        error_message=bindparam("b_error_message"),
    )
)


def next_event_id(dialect: str) -> ColumnElement[int]:
    """SQL for the id the next event of this transaction gets, so that the statement that writes
    the task also writes its ``seq``, and the event is then inserted with that id
    (``insert_event(..., event_id=)``): one statement per change less than inserting the event
    first and writing ``seq`` after it (bench figure 3).

    PostgreSQL: the events' own sequence (a value that a statement takes and then writes nothing
    with is a gap, which ids allow). SQLite: the largest id + 1, the rowid SQLite itself gives a new
    row of an ``INTEGER PRIMARY KEY`` table (read from the end of the primary key's b-tree, not by a
    scan). That holds because a transaction that writes holds the database's one write lock from
    its first write; the caller inserts this event before any other event of its transaction.
    """
    if dialect == "postgresql":
        return func.nextval(func.pg_get_serial_sequence("task_events", "id"))
    return select(func.coalesce(func.max(task_events.c.id), 0) + 1).scalar_subquery()


async def insert_event(
    session: Transaction,
    task_id: str,
    user_id: str,
    status: str,
    progress: int,
    kind: str = "status",
    *,
    event_id: int | None = None,
) -> int:
    """Core: append the event and return its id (the task's new ``seq``); the caller writes the
    task's ``seq`` in its own UPDATE of the task (see ``record``), or already wrote it with
    :func:`next_event_id` and passes that id as ``event_id``, and calls ``changed``."""
    values: dict[str, object] = {
        "task_id": task_id,
        "user_id": user_id,
        "kind": kind,
        "status": status,
        "progress": progress,
    }
    if event_id is not None:
        values["id"] = event_id
    result = await execute(session, _INSERT_EVENT, values)
    return int(result.scalar_one())


async def record(
    session: Transaction, task_id: str, user_id: str, status: str, progress: int, kind: str = "status"
) -> int:
    """``touch`` for a task written with Core statements (no ORM instance): the event, the task's
    ``seq``, the listeners' wake-up after commit. Returns the new ``seq``."""
    seq = await insert_event(session, task_id, user_id, status, progress, kind)
    await execute(session, _SET_SEQ, {"b_task_id": task_id, "b_seq": seq})
    changed(session, task_id, user_id)
    return seq


def changed(session: Transaction, task_id: str, user_id: str) -> None:
    """Remember that the task changed: its owner's event streams are woken after commit."""
    session.info.setdefault("changed_tasks", set()).add(task_id)
    users: set[str] | None = session.info.get("changed_users")
    if users is None:
        users = session.info["changed_users"] = set()
        after_commit(session, partial(_wake_listeners, session.info))
        on_rollback(session, partial(_forget, session.info))
    users.add(user_id)


async def _forget(info: dict[str, Any]) -> None:
    info.pop("changed_users", None)
    info.pop("changed_tasks", None)


async def _wake_listeners(info: dict[str, Any]) -> None:
    """After commit: wake this process's event streams of the users whose tasks changed."""
    users = info.pop("changed_users", set())
    info.pop("changed_tasks", None)
    notify_committed(info, users)


def notify_committed(info: dict[str, Any], users: set[str]) -> None:
    """Wake this process's event streams of ``users`` (``info`` holds the hub: a session's, or
    ``Database.session_info`` for a statement committed outside a session)."""
    hub = info.get("event_hub")
    if hub is not None:
        hub.notify(users)


async def close_attempt(session: AsyncSession, task: Task, status: str, now: datetime) -> None:
    """Record how the task's current attempt ended (history kept across retries).
    One UPDATE, no read of the attempt row first (one statement less per finished task)."""
    await end_attempt(session, task.id, task.attempt, status, now, task.error_code, task.error_message)


async def end_attempt(
    session: Transaction,
    task_id: str,
    attempt: int,
    status: str,
    now: datetime,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    """``close_attempt`` by ids (Core)."""
    await execute(
        session,
        _END_ATTEMPT,
        {
            "b_task_id": task_id,
            "b_attempt": attempt,
            "b_status": status,
            "b_now": now,
            "b_error_code": error_code,
            "b_error_message": error_message,
        },
    )
