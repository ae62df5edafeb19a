"""Finds tasks that nobody is working on and rings the doorbell for them again.

* pending tasks whose dispatch is older than ``grace`` (a lost message, a crash before the
  in-process queue picked them up; at start-up every pending task);
* processing tasks whose lease expired (their worker died or stalled).

Claims are conditional, so a task dispatched twice still runs once. At scale every worker process
runs a reaper; on PostgreSQL the batch is selected ``FOR UPDATE SKIP LOCKED``, so two reapers
never pick the same rows at once (and rows a worker is claiming right now are skipped), and the
``dispatched_at`` they stamp keeps the next pass off them for ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, update

from darkroom.context import AppContext
from darkroom.models import Task, TaskStatus
from darkroom.storage.orphans import sweep_orphans
from darkroom.uploads.service import sweep_unused

log = logging.getLogger(__name__)


async def reap(ctx: AppContext, *, grace: float, limit: int = 500) -> list[str]:
    now = datetime.now(UTC)
    async with ctx.db.transaction() as session:
        ids = list(
            await session.scalars(
                select(Task.id)
                .where(
                    or_(
                        and_(
                            Task.status == TaskStatus.PENDING,
                            or_(
                                Task.dispatched_at.is_(None),
                                Task.dispatched_at <= now - timedelta(seconds=grace),
                            ),
                        ),
                        and_(Task.status == TaskStatus.PROCESSING, Task.lease_expires_at < now),
                    )
                )
                .order_by(Task.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serialises writers anyway
            )
        )
        if ids:
            await session.execute(update(Task).where(Task.id.in_(ids)).values(dispatched_at=now))
    if ids:
        log.info("re-dispatching %d task(s)", len(ids), extra={"task_ids": ids})
        await ctx.dispatcher.dispatch(ids)
    return ids


async def reaper_loop(ctx: AppContext, *, grace: float) -> None:
    orphan_grace = ctx.settings.orphan_sweep_after_seconds
    next_orphan_sweep = 0.0  # the first pass sweeps; then every quarter of the grace period
    while True:
        await asyncio.sleep(ctx.settings.reaper_interval_seconds)
        try:
            await reap(ctx, grace=grace)
            await sweep_unused(ctx)
            if orphan_grace and time.monotonic() >= next_orphan_sweep:
                next_orphan_sweep = time.monotonic() + orphan_grace / 4
                await sweep_orphans(ctx, grace_seconds=orphan_grace)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reaper pass failed; will try again")
