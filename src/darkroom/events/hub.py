"""Wake-up sources for event streams.

The ``task_events`` table is the truth; a hub only says "look again, user U has news". Two
sources feed it: the after-commit hook of every transaction that touched a task in this process
(instant), and :class:`~darkroom.events.tail.EventTailer`, which polls the table for changes made
by other processes (workers elsewhere) every ``DARKROOM_EVENTS_POLL_SECONDS``. A hub also ends
its streams when the server stops (``close``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Waiter:
    """One listener's doorbell: ``wait`` returns when woken, or after ``timeout`` seconds.
    ``close`` wakes it for good: its stream is over (the client left, or the server stops)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def wake(self) -> None:
        self._event.set()

    def close(self) -> None:
        self.closed = True
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

    def close(self) -> None:
        """The server stops: close every listener, now and from now on."""
        ...


class InProcessHub:
    """Listeners of this process, by user. Must be used from the event loop's thread."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[Waiter]] = defaultdict(set)
        self.closed = False

    def notify(self, user_ids: Iterable[str]) -> None:
        for user_id in set(user_ids):
            for waiter in self._waiters.get(user_id, ()):
                waiter.wake()

    @contextmanager
    def subscribe(self, user_id: str) -> Iterator[Waiter]:
        waiter = Waiter()
        if self.closed:
            waiter.close()
        self._waiters[user_id].add(waiter)
        try:
            yield waiter
        finally:
            listeners = self._waiters.get(user_id)
            if listeners is not None:
                listeners.discard(waiter)
                if not listeners:
                    del self._waiters[user_id]

    def close(self) -> None:
        self.closed = True
        for listeners in self._waiters.values():
            for waiter in listeners:
                waiter.close()

    def listeners(self, user_id: str) -> int:
        return len(self._waiters.get(user_id, ()))
