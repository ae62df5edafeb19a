"""Work that must wait for the transaction's outcome: dispatch after commit, cleanup on rollback.

Services register callbacks on the session; whoever owns the transaction runs them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)
Callback = Callable[[], Awaitable[None]]


class HasInfo(Protocol):
    """A transaction's owner object: an ``AsyncSession`` or a ``db.DriverTransaction``."""

    @property
    def info(self) -> dict[Any, Any]: ...


def after_commit(session: HasInfo, callback: Callback) -> None:
    session.info.setdefault("after_commit", []).append(callback)


def on_rollback(session: HasInfo, callback: Callback) -> None:
    session.info.setdefault("on_rollback", []).append(callback)


async def run_hooks(session: HasInfo, *, committed: bool) -> None:
    hooks: list[Callback] = session.info.pop("after_commit" if committed else "on_rollback", [])
    session.info.pop("on_rollback" if committed else "after_commit", None)
    for hook in hooks:
        try:
            await hook()
        except Exception:  # a hook must never turn a committed request into an error
            log.exception("post-transaction hook failed")


@asynccontextmanager
async def owned(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """Own the session's transaction: commit at the end of the block, roll back on any error,
    then run the hooks that waited for that outcome."""
    try:
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        await run_hooks(session, committed=False)
        raise
    await run_hooks(session, committed=True)
