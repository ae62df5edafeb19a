"""Task numbers are the seed's "T" + the second + 4 random characters, so two tasks created in the
same second can draw the same one. The second task gets another number instead of failing (it was
answered 503 "database unavailable", about once in 40 s at 300 tasks a second), and is charged once."""

from __future__ import annotations

import pytest

from darkroom.tasks import service
from tests.conftest import AppFactory
from tests.support import photo, register, stored_events, stored_task, submit


async def test_a_task_number_drawn_twice_is_drawn_again(
    app_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app_client(run_workers=False) as client:
        auth = await register(client)
        first = (await submit(client, auth, "color_enhancement", [photo()])).json()["data"]

        draws = iter([first["taskNo"], first["taskNo"]])  # taken twice, then a fresh one
        real = service.new_task_no
        monkeypatch.setattr(service, "new_task_no", lambda now: next(draws, None) or real(now))
        r = await submit(client, auth, "color_enhancement", [photo()])
        assert r.status_code == 201, r.text
        second = r.json()["data"]
        assert second["taskNo"] != first["taskNo"] and second["taskNo"].startswith("T")

        listed = (await client.get("/api/tasks", headers=auth)).json()["data"]
        assert sorted(t["taskNo"] for t in listed) == sorted([first["taskNo"], second["taskNo"]])
        credits = (await client.get("/api/credits", headers=auth)).json()["data"]
        reserves = [t for t in credits["transactions"] if t["type"] == "reserve"]
        assert len(reserves) == 2
        assert any(second["taskNo"] in (t["description"] or "") for t in reserves)
        assert credits["balance"] == 20 - first["cost"] - second["cost"]

        # the inserts that found the number taken wrote nothing; the one that did took the id of
        # the task's event for its seq (on PostgreSQL the others' sequence values are gaps)
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        seq = (await stored_task(ctx, second["id"])).seq
        assert await stored_events(ctx, second["id"]) == [(seq, "pending", 0)]
        assert second["seq"] == seq
