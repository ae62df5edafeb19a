"""Fixtures for the external providers: the real app wired to fake provider servers on loopback."""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from darkroom.models import Task
from darkroom.providers.factory import external_providers
from tests.conftest import AppFactory, make_settings
from tests.database import TEST_DATABASES_THREAD

# Quick retries and polling so the suite stays fast; the behaviour is the same as in production.
FAST: dict[str, Any] = {
    "provider_backoff_seconds": 0.01,
    "provider_poll_seconds": 0.05,
    "provider_timeout_seconds": 1.5,
    "provider_retries": 2,
    "trusted_download_hosts": "127.0.0.1",  # the fakes serve result files on loopback
}

ExternalApp = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def external_app(tmp_path: Path, app_client: AppFactory) -> ExternalApp:
    """The real app (SQLite, storage, workers) with the providers that Settings configure."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        values = {**FAST, **overrides}
        settings = make_settings(tmp_path, **values)
        providers = external_providers(settings)
        try:
            async with app_client(providers=providers, **values) as client:
                yield client
        finally:
            for provider in providers:
                await provider.aclose()

    return factory


async def task_row(client: httpx.AsyncClient, task_id: str) -> Task:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    async with ctx.db.transaction(write=False) as session:
        task = await session.scalar(select(Task).where(Task.id == task_id))
        assert task is not None
        return task  # type: ignore[no-any-return]


async def ledger(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, list[str]]:
    data = (await client.get("/api/credits", headers=headers)).json()["data"]
    return data["balance"], [t["type"] for t in data["transactions"]]


# -- no packet to a non-loopback address ---------------------------------------------------------

_connects: list[Any] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _connects is not None and event == "socket.connect":
        if threading.current_thread().name.startswith(TEST_DATABASES_THREAD):
            return  # the suite's own PostgreSQL copies, made beside the test (TemplateCopies)
        _connects.append(args[1])


sys.addaudithook(_audit)


@pytest.fixture
def loopback_only() -> Any:
    """Record every socket connect (Python audit events) and check they all went to loopback."""
    global _connects
    _connects = []
    seen = _connects
    yield seen
    _connects = None
    for address in seen:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host and not host.startswith("/"):
            assert ipaddress.ip_address(host).is_loopback, f"connected to {address}"
