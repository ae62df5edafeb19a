from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager

from darkroom.app import create_app
from darkroom.config import Settings
from darkroom.providers.base import Provider
from darkroom.providers.local import LocalProvider
from tests import database
from tests.seaweed import seaweedfs  # noqa: F401 - a session fixture (real S3 server)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "data_dir": data_dir,
        "jwt_secret": "test-secret-" + "x" * 40,
        "task_lease_seconds": 2.0,
        "reaper_interval_seconds": 0.5,
        "worker_concurrency": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def local_provider() -> AsyncIterator[LocalProvider]:
    """One model process pool for the whole run (spawning it and loading models takes seconds)."""
    provider = LocalProvider(max_workers=1)
    yield provider
    await provider.aclose()


AppFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def app_client(tmp_path: Path, local_provider: LocalProvider) -> AppFactory:
    """Start the real app (real SQLite file, real storage, in-process workers) and give an HTTP client."""

    @asynccontextmanager
    async def factory(
        providers: Sequence[Provider] | None = None, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(tmp_path, **overrides)
        app = create_app(settings, providers=list(providers) if providers is not None else [local_provider])
        # Generous start-up and shutdown limits: on a loaded 2-core CI machine, stopping workers
        # mid-task (and their model or provider calls) can take longer than the 5 s default.
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client

    return factory


@pytest.fixture
async def client(app_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client() as c:
        yield c


# -- which database (DARKROOM_TEST_DATABASE=postgres runs everything on PostgreSQL) --------------


@pytest.fixture(scope="session")
def pg_copies() -> Iterator[database.TemplateCopies | None]:
    """On PostgreSQL: one migrated template database per run, copied for each test (the copies
    made one test ahead: ``database.TemplateCopies``)."""
    if not database.ON_POSTGRES:
        yield None
        return
    from darkroom import migrate

    url = database.create_database(prefix="darkroom_tpl")
    migrate.upgrade(url)
    copies = database.TemplateCopies(url.rsplit("/", 1)[1])
    try:
        yield copies
    finally:
        copies.close()
        database.drop_database(url)


@pytest.fixture(autouse=True)
def test_database(
    pg_copies: database.TemplateCopies | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """Each test's own database: a fresh PostgreSQL copy of the template, exported as DATABASE_URL
    (Settings, CLI subprocesses and servers started by tests all read it); SQLite: None, each
    test's data dir holds its own file."""
    if pg_copies is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        yield None
        return
    url = pg_copies.take()
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    pg_copies.give_back(url)
