"""Creating a task: the row, its first event and its ``seq`` in one transaction."""

from __future__ import annotations

from tests.conftest import AppFactory
from tests.support import photo, register, stored_events, stored_task, submit


async def test_a_new_tasks_seq_is_the_id_of_its_first_event(app_client: AppFactory) -> None:
    # The task's INSERT takes the event's id (next_event_id) and the event is inserted with it
    # afterwards: the two must agree, task after task, and the ids must keep rising.
    async with app_client(run_workers=False) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        auth = await register(client)
        seqs = []
        for _ in range(3):
            r = await submit(client, auth, "color_enhancement", [photo()])
            assert r.status_code == 201, r.text
            data = r.json()["data"]
            seq = (await stored_task(ctx, data["id"])).seq
            assert await stored_events(ctx, data["id"]) == [(seq, "pending", 0)]
            assert data["seq"] == seq
            # the answer is built from what was written (models.base.loaded), not read back:
            # it must show what reading it back shows
            read = (await client.get(f"/api/tasks/{data['id']}", headers=auth)).json()["data"]
            assert {k: v for k, v in read.items() if k != "attempts"} == {
                k: v for k, v in data.items() if k != "attempts"
            }
            seqs.append(seq)
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
