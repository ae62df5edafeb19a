"""Sweep stored objects that no database row refers to.

A task's input is stored just before the transaction that records it, and a result just before
the transaction that finishes the attempt. A crash (or a lost database) between the two leaves a
file nobody can reach. Keys start with the millisecond they were made
(``folder/yyyy/mm/{ms}_…``), so the sweep lists only the current and the previous month, in key
order, stops at the first key younger than the grace period, and deletes the keys that neither
``task_files`` nor ``uploads`` name. Several sweepers at once are harmless: deleting is idempotent.
Staging files (uploads being streamed and results written by model processes,
``storage/staging.py``) older than the grace period are what a killed process left in the middle
of an upload or of a task's finish; they are removed too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from sqlalchemy import select

from darkroom.context import AppContext
from darkroom.models import TaskFile, Upload
from darkroom.storage import staging

log = logging.getLogger(__name__)

FOLDERS = ("inputs", "outputs")
_PAGE = 500


def _month_prefixes(folder: str, cutoff_ms: int) -> list[str]:
    at = datetime.fromtimestamp(cutoff_ms / 1000, UTC)
    previous = (at.year, at.month - 1) if at.month > 1 else (at.year - 1, 12)
    return [f"{folder}/{y:04d}/{m:02d}/" for y, m in (previous, (at.year, at.month))]


def _made_at_ms(key: str) -> int | None:
    stamp = key.rsplit("/", 1)[-1].split("_", 1)[0]
    return int(stamp) if stamp.isdigit() else None


async def _referenced(ctx: AppContext, keys: list[str]) -> set[str]:
    async with ctx.db.transaction(write=False) as session:
        files = await session.scalars(select(TaskFile.storage_key).where(TaskFile.storage_key.in_(keys)))
        uploads = await session.scalars(select(Upload.storage_key).where(Upload.storage_key.in_(keys)))
        return set(files) | set(uploads)


async def sweep_orphans(ctx: AppContext, *, grace_seconds: float, now: float | None = None) -> list[str]:
    """Delete objects older than ``grace_seconds`` that no row refers to; returns their keys."""
    cutoff_ms = int(((time.time() if now is None else now) - grace_seconds) * 1000)
    deleted: list[str] = []
    for folder in FOLDERS:
        for prefix in _month_prefixes(folder, cutoff_ms):
            after = ""
            while True:
                page = await ctx.storage.list_keys(prefix, start_after=after, limit=_PAGE)
                old = [k for k in page if (_made_at_ms(k) or cutoff_ms + 1) <= cutoff_ms]
                if old:
                    known = await _referenced(ctx, old)
                    for key in old:
                        if key not in known:
                            await ctx.storage.delete(key)
                            deleted.append(key)
                if len(page) < _PAGE or len(old) < len(page):  # the end, or keys too young to judge
                    break
                after = page[-1]
    if deleted:
        log.warning("deleted %d stored object(s) that no task or upload refers to", len(deleted))
    stale = await asyncio.to_thread(staging.sweep, ctx.storage.staging_dir, older_than=grace_seconds, now=now)
    if stale:
        log.warning("deleted %d staging file(s) of interrupted uploads or tasks", len(stale))
    return deleted
