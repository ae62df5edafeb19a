"""Wake-up sources for event streams.

The ``task_events`` table is the truth; a hub only says "look again, user U has news". Two
sources feed it: the after-commit hook of every transaction that touched a task in this process
(instant), and :class:`~darkroom.events.tail.EventTailer`, which polls the table for changes made
by other processes (workers elsewhere) every ``DARKROOM_EVENTS_POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Waiter:
    """One listener's doorbell: ``wait`` returns when woken, or after ``timeout`` seconds."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """True when woken, False after ``seconds``. A wake-up that came before the call is not lost."""
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True


class EventHub(Protocol):
    def notify(self, user_ids: Iterable[str]) -> None:
        """Wake every listener of these users."""
        ...

    def subscribe(self, user_id: str) -> AbstractContextManager[Waiter]:
        """Listen for this user's changes while the block runs."""
        ...


class InProcessHub:
    """Listeners of this process, by user. Must be used from the event loop's thread."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[Waiter]] = defaultdict(set)

    def notify(self, user_ids: Iterable[str]) -> None:
        for user_id in set(user_ids):
            for waiter in self._waiters.get(user_id, ()):
                waiter.wake()

    @contextmanager
    def subscribe(self, user_id: str) -> Iterator[Waiter]:
        waiter = Waiter()
        self._waiters[user_id].add(waiter)
        try:
            yield waiter
        finally:
            listeners = self._waiters.get(user_id)
            if listeners is not None:
                listeners.discard(waiter)
                if not listeners:
                    del self._waiters[user_id]

    def listeners(self, user_id: str) -> int:
        return len(self._waiters.get(user_id, ()))
