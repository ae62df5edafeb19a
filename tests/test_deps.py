"""How many transactions a request opens: reads share one; writes look the user up first, apart;
the status poll opens none."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from darkroom.db import WRITE_OPTION
from tests.conftest import AppFactory
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
