"""Provider callbacks through the database, so a webhook reaches the waiting run in any process.

In scale-out the API process that receives a Replicate webhook is rarely the worker process that
waits on the prediction. The endpoint :func:`record`\\ s the verified prediction in
``provider_callbacks``; the waiting provider :meth:`CallbackStore.take`\\ s it — one primary-key
read per poll interval, much cheaper than asking Replicate — and finishes through the worker's own
conditional finish (claim, lease, capture once). Polling the provider stays the fallback when
webhooks are off or lost.

Rows are deleted when taken; ones nobody takes (the task was canceled, or finished by polling
first) are pruned after :data:`KEEP` on the next write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from darkroom.db import Database
from darkroom.models import ProviderCallback
from darkroom.models.base import utcnow
from darkroom.providers.base import Provider

KEEP = timedelta(days=1)


async def record(db: Database, provider: str, request_id: str, payload: Mapping[str, Any]) -> None:
    """Store (or replace) the latest callback for ``request_id``; prune forgotten ones."""
    now = utcnow()
    try:
        async with db.transaction() as session:
            await session.execute(delete(ProviderCallback).where(ProviderCallback.received_at < now - KEEP))
            row = await session.get(ProviderCallback, (provider, request_id))
            if row is None:
                session.add(
                    ProviderCallback(
                        provider=provider, request_id=request_id, payload=dict(payload), received_at=now
                    )
                )
            else:
                row.payload, row.received_at = dict(payload), now
    except IntegrityError:  # the same webhook delivered twice at once: the other one stored it
        pass


class CallbackStore:
    """What a provider waiting on a request reads: the callbacks stored for it."""

    def __init__(self, db: Database, provider: str) -> None:
        self.db = db
        self.provider = provider

    async def take(self, request_id: str) -> dict[str, Any] | None:
        """The stored callback for ``request_id`` (removed once read), or None. A read first, so
        the common case — nothing arrived yet — never takes the write lock."""
        key = (ProviderCallback.provider == self.provider) & (ProviderCallback.request_id == request_id)
        async with self.db.transaction(write=False) as session:
            payload = await session.scalar(select(ProviderCallback.payload).where(key))
        if payload is None:
            return None
        async with self.db.transaction() as session:
            await session.execute(delete(ProviderCallback).where(key))
        return dict(payload)


def bind_database(providers: Iterable[Provider], db: Database) -> None:
    """Give the providers that wait on callbacks (``bind_callbacks``) their store."""
    for provider in providers:
        bind = getattr(provider, "bind_callbacks", None)
        if bind is not None:
            bind(CallbackStore(db, provider.name))
