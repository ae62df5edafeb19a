"""Event streams on PostgreSQL follow commit order, not id order.

Two transactions take event ids 10 and 11 and commit as 11, then 10. A stream that read 11 and
then asked for what came after it used to miss 10 for good (and so did a client resuming with
``Last-Event-ID``). Events now carry a position given at commit (migration 0005): the stream
reads 11's position, then 10's, which is larger. This needs two writers at once, which SQLite
does not allow, so the test runs on its own PostgreSQL database in both passes of the suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from darkroom.app import create_app
from darkroom.events.stream import _after, latest_for_user
from darkroom.providers.local import LocalProvider
from tests import database
from tests.conftest import make_settings
from tests.support import photo, register, submit

_INSERT = (
    "INSERT INTO task_events (task_id, user_id, kind, status, progress, created_at) "
    "VALUES ($1, $2, 'progress', 'pending', $3, now()) RETURNING id"
)


@pytest.fixture
async def pg_app(
    tmp_path: Path, local_provider: LocalProvider
) -> AsyncIterator[tuple[httpx.AsyncClient, Any, str]]:
    url = database.create_database(prefix="darkroom_order")
    try:
        settings = make_settings(tmp_path, database_url=url, run_workers=False)
        app = create_app(settings, providers=[local_provider])  # no workers: the tasks stay pending
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield client, app.state.ctx, database.asyncpg_dsn(url)
    finally:
        database.drop_database(url)


async def test_an_event_committed_after_a_newer_one_still_reaches_the_stream(
    pg_app: tuple[httpx.AsyncClient, Any, str],
) -> None:
    client, ctx, dsn = pg_app
    auth = await register(client)
    me = (await client.get("/api/me", headers=auth)).json()["data"]["user"]
    first, second = [
        (await submit(client, auth, "color_enhancement", [photo()])).json()["data"]["id"] for _ in range(2)
    ]
    start = await latest_for_user(ctx, me["id"])

    early, late = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        slow = early.transaction()
        await slow.start()
        lower = await early.fetchval(_INSERT, first, me["id"], 10)  # the smaller id, committed last
        async with late.transaction():
            higher = await late.fetchval(_INSERT, second, me["id"], 20)
        assert lower < higher

        seen = await _after(ctx, me["id"], None, start)
        assert [row.id for row in seen] == [higher]

        await slow.commit()
        later = await _after(ctx, me["id"], None, seen[-1].cursor)
        assert [row.id for row in later] == [lower]
        assert later[0].cursor > seen[-1].cursor
        assert await latest_for_user(ctx, me["id"]) == later[0].cursor
    finally:
        await early.close()
        await late.close()
