"""What the app and the workers share: settings, database, storage, providers, dispatch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from darkroom.config import Settings
from darkroom.db import Database
from darkroom.events.hub import EventHub, InProcessHub
from darkroom.providers.registry import ProviderRegistry
from darkroom.storage.base import Storage


class Dispatcher(Protocol):
    async def dispatch(self, task_ids: Sequence[str]) -> None:
        """Ring the doorbell for these tasks. Only called after their transaction committed."""
        ...


class NullDispatcher:
    """For processes that run no workers and have no broker: the reaper of a worker picks tasks up."""

    async def dispatch(self, task_ids: Sequence[str]) -> None:
        return None


@dataclass
class AppContext:
    settings: Settings
    db: Database
    storage: Storage
    registry: ProviderRegistry
    dispatcher: Dispatcher = field(default_factory=NullDispatcher)
    events: EventHub = field(default_factory=InProcessHub)
