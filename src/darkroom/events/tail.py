"""Tail the task_events table so that streams see changes committed by other processes.

Workers in other processes (``darkroom worker``, other ``serve`` instances) cannot reach this
process's hub, so one background loop per process asks the database every
``DARKROOM_EVENTS_POLL_SECONDS`` which users have events newer than the last one it saw and
wakes their listeners. That is one cheap indexed query per interval per process, whatever the
number of open streams; a change made elsewhere reaches a stream within one interval.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, select

from darkroom.db import Database
from darkroom.events.hub import EventHub
from darkroom.events.stream import cursor_column
from darkroom.models import TaskEvent

log = logging.getLogger(__name__)


async def latest_event_id(db: Database) -> int:
    """The newest stream position of all users (``events.stream.cursor_column``)."""
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.max(cursor_column(db.is_sqlite)))) or 0)


async def tail_events(db: Database, hub: EventHub, interval: float) -> None:
    """Run until cancelled."""
    cursor = cursor_column(db.is_sqlite)
    last = await latest_event_id(db)
    while True:
        await asyncio.sleep(interval)
        try:
            async with db.transaction(write=False) as session:
                rows = (
                    await session.execute(
                        select(TaskEvent.user_id, func.max(cursor))
                        .where(cursor > last)
                        .group_by(TaskEvent.user_id)
                    )
                ).all()
        except Exception:
            log.warning("event tail query failed; retrying", exc_info=True)
            continue
        if rows:
            last = max(last, *(int(r[1]) for r in rows))
            hub.notify(r[0] for r in rows)
