"""Work that must wait for the transaction's outcome: dispatch after commit, cleanup on rollback.

Services register callbacks on the session; whoever owns the transaction runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)
Callback = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, callback: Callback) -> None:
    session.info.setdefault("after_commit", []).append(callback)


def on_rollback(session: AsyncSession, callback: Callback) -> None:
    session.info.setdefault("on_rollback", []).append(callback)


async def run_hooks(session: AsyncSession, *, committed: bool) -> None:
    hooks: list[Callback] = session.info.pop("after_commit" if committed else "on_rollback", [])
    session.info.pop("on_rollback" if committed else "after_commit", None)
    for hook in hooks:
        try:
            await hook()
        except Exception:  # a hook must never turn a committed request into an error
            log.exception("post-transaction hook failed")
