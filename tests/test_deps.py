"""How many transactions a request opens: reads share one; writes look the user up first, apart;
the status poll opens none."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy import event

from darkroom.app import create_app
from darkroom.db import WRITE_OPTION
from tests.conftest import AppFactory, make_settings
from tests.doubles import ScriptedProvider
from tests.support import register, submit, wait_for


def _record_begins(app: Any) -> list[str]:
    """ "read"/"write" for each transaction SQLAlchemy begins, on SQLite and PostgreSQL alike
    (asyncpg sends no BEGIN statement through the cursor, so statements cannot be counted there).
    Driver reads (``Database.fetch_single``) begin nothing."""
    begins: list[str] = []
    for engine in app.state.ctx.db.owned_engines:  # options engines share their parent's listeners

        @event.listens_for(engine.sync_engine, "begin")
        def _seen(conn: Any) -> None:
            begins.append("write" if conn.get_execution_options().get(WRITE_OPTION) else "read")

    return begins


async def test_a_read_request_is_one_transaction_and_a_write_keeps_its_user_lookup_apart(
    app_client: AppFactory,
) -> None:
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    # no event tail: its poll (every second) would begin reads of its own among the requests'
    async with app_client(providers=[provider], reaper_interval_seconds=60, events_poll_seconds=0) as client:
        headers = await register(client)
        task_id = (await submit(client, headers, "color_enhancement")).json()["data"]["id"]
        await wait_for(client, headers, task_id)
        begins = _record_begins(client.app)  # type: ignore[attr-defined]

        # the status poll: user lookup and task read are one statement, sent to the driver
        # (Database.fetch_single), so SQLAlchemy begins nothing
        r = await client.get(f"/api/tasks/{task_id}/status", headers=headers)
        assert r.status_code == 200 and r.json()["data"]["status"] == "completed"
        r = await client.get("/api/tasks/nope/status", headers=headers)
        assert r.status_code == 404 and r.json()["code"] == "task_not_found"
        r = await client.get(f"/api/tasks/{task_id}/status", headers={"Authorization": "Bearer bad"})
        assert r.status_code == 401
        assert begins == []

        r = await client.get(f"/api/tasks/{task_id}", headers=headers)
        assert r.status_code == 200
        assert begins == ["read"]  # user lookup, task, files and attempts: one read transaction

        begins.clear()
        r = await client.post(f"/api/tasks/{task_id}/cancel", headers=headers)
        assert r.status_code == 409 and r.json()["code"] == "task_not_cancelable"
        # the user is read by one driver statement of its own before the write transaction begins
        assert begins == ["write"]


def _sync_dependencies(dependant: Any, seen: set[int]) -> list[str]:
    found = []
    for sub in dependant.dependencies:
        call = sub.call
        if call is not None and id(call) not in seen:
            seen.add(id(call))
            target = call if inspect.isroutine(call) else type(call).__call__
            if not (inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)):
                found.append(getattr(call, "__qualname__", repr(call)))
        found += _sync_dependencies(sub, seen)
    return found


def test_no_route_has_a_dependency_that_runs_in_the_thread_pool(tmp_path: Path) -> None:
    """FastAPI calls a plain ``def`` dependency through its thread pool: a thread hop on every
    request (``get_context`` was one, on every API request)."""
    app = create_app(make_settings(tmp_path), providers=[])
    routes = list(_api_routes(app.routes))
    assert len(routes) > 20  # every included router was walked
    seen: set[int] = set()
    sync = [f"{route.path}: {name}" for route in routes for name in _sync_dependencies(route.dependant, seen)]
    assert sync == []


def _api_routes(routes: Any) -> Any:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:  # include_router
            yield from _api_routes(router.routes)
