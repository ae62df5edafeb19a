"""Server-Sent Events against a real ``darkroom serve``: live delivery, resume with
Last-Event-ID without gaps, keep-alive comments, isolation between users, and changes made by
another server process reaching a stream through the table tail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.database import ON_POSTGRES
from tests.server import Server
from tests.support import photo, unique_email

pytestmark = pytest.mark.slow

FINAL = {"completed", "failed", "canceled"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # No table tail here: live events can only come from the in-process hub woken after commit.
    s = Server(
        tmp_path_factory.mktemp("sse"), DARKROOM_SSE_KEEPALIVE_SECONDS="0.5", DARKROOM_EVENTS_POLL_SECONDS="0"
    ).start()
    yield s
    s.stop()


def sign_up(base: str) -> dict[str, str]:
    body = {"email": unique_email("sse"), "password": "sse-pass-12"}
    r = httpx.post(f"{base}/api/auth/register", json=body)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['data']['accessToken']}"}


def create(base: str, auth: dict[str, str], width: int = 320) -> str:
    r = httpx.post(
        f"{base}/api/tasks",
        headers=auth,
        data={"taskType": "color_enhancement"},
        files=[("files", ("p.jpg", photo(width, width * 3 // 4), "image/jpeg"))],
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


class Reader:
    """Reads an SSE response line by line: events (id + data) and comments."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.comments = 0

    def next_event(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        for line in self.lines:
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("id:"):
                event["id"] = int(line[3:].strip())
            elif line.startswith("data:"):
                event["data"] = json.loads(line[5:].strip())
            elif line == "" and event:
                return event
        raise AssertionError("stream ended")

    def until_final(self, task_id: str) -> list[dict[str, Any]]:
        events = []
        while True:
            event = self.next_event()
            events.append(event)
            data = event["data"]
            if data["taskId"] == task_id and data["kind"] == "status" and data["status"] in FINAL:
                return events


def stream(client: httpx.Client, path: str, auth: dict[str, str], **headers: str):  # type: ignore[no-untyped-def]
    return client.stream("GET", path, headers={**auth, **headers}, timeout=httpx.Timeout(10, read=120))


def test_live_stream_headers_and_completion(server: Server) -> None:
    auth = sign_up(server.url)
    with httpx.Client(base_url=server.url) as client, stream(client, "/api/events", auth) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        task_id = create(server.url, auth)
        events = Reader(response).until_final(task_id)
    ids, seqs = [e["id"] for e in events], [e["data"]["seq"] for e in events]
    assert ids == sorted(set(ids)) and seqs == sorted(set(seqs))
    if not ON_POSTGRES:  # on PostgreSQL the id is the commit-ordered position instead
        assert ids == seqs
    assert events[0]["data"]["status"] == "pending"
    assert events[-1]["data"]["status"] == "completed" and events[-1]["data"]["progress"] == 100
    # The last event's seq is the task's sequence number, also in its ETag.
    status = httpx.get(f"{server.url}/api/tasks/{task_id}/status", headers=auth)
    assert status.json()["data"]["seq"] == seqs[-1]


def test_more_streams_at_once_than_database_connections(server: Server) -> None:
    # Each opening reads the user and the newest sequence number. Those reads once took a second
    # pooled connection while the request held one: with more openings at once than the pool has
    # connections (16 on SQLite, 30 on PostgreSQL), every request waited for another and all
    # failed with a 500 after the pool timeout.
    auth = sign_up(server.url)
    n = 48

    async def open_all() -> list[int]:
        limits = httpx.Limits(max_connections=n)
        async with (
            httpx.AsyncClient(base_url=server.url, limits=limits, timeout=90) as client,
            contextlib.AsyncExitStack() as stack,
        ):
            responses = await asyncio.gather(
                *(
                    stack.enter_async_context(client.stream("GET", "/api/events", headers=auth))
                    for _ in range(n)
                )
            )
            return [r.status_code for r in responses]

    assert asyncio.run(open_all()) == [200] * n
    assert httpx.get(f"{server.url}/api/tasks", headers=auth).status_code == 200


def test_resume_with_last_event_id_misses_nothing(server: Server) -> None:
    auth = sign_up(server.url)
    task_id = create(server.url, auth, width=800)
    with httpx.Client(base_url=server.url) as client:
        # Read the first two events, then drop the connection.
        with stream(client, f"/api/tasks/{task_id}/events", auth) as response:
            reader = Reader(response)
            first = [reader.next_event(), reader.next_event()]
        # Reconnect like EventSource does, with the header; then read to the end.
        resume = {"Last-Event-ID": str(first[-1]["id"])}
        with stream(client, f"/api/tasks/{task_id}/events", auth, **resume) as r:
            rest = Reader(r).until_final(task_id)
        # The query-parameter form, from zero: the whole history from the table.
        with stream(client, f"/api/tasks/{task_id}/events?lastEventId=0", auth) as r:
            everything = Reader(r).until_final(task_id)
    seen = [e["id"] for e in first + rest]
    assert seen == [e["id"] for e in everything]
    assert len(everything) >= 3  # pending, processing (+ progress), completed


def test_keepalives_and_other_users_see_nothing(server: Server) -> None:
    alice, bob = sign_up(server.url), sign_up(server.url)
    task_id = create(server.url, alice)
    with httpx.Client(base_url=server.url) as client:
        with stream(client, f"/api/tasks/{task_id}/events", alice) as r:
            Reader(r).until_final(task_id)  # alice's task is done and in the table
        # Bob replays his whole history (from 0) and listens: only keep-alive comments arrive.
        with stream(client, "/api/events?lastEventId=0", bob) as r:
            lines = r.iter_lines()
            comments = 0
            for line in lines:
                assert not line.startswith(("data:", "id:")), line
                if line.startswith(":"):
                    comments += 1
                    if comments == 3:
                        break
        assert comments == 3
        # Bob cannot open alice's task stream at all.
        r2 = client.get(f"/api/tasks/{task_id}/events", headers=bob)
        assert r2.status_code == 404 and r2.json()["code"] == "task_not_found"
        # Without credentials: 401 in the envelope.
        r3 = client.get("/api/events")
        assert r3.status_code == 401 and r3.json()["code"] == "unauthorized"


def test_changes_made_by_another_process_reach_the_stream(tmp_path: Path) -> None:
    """Two servers on one database: the one holding the stream runs no workers, so the task's
    changes are committed by the other process and reach the stream through the table tail."""
    worker = Server(tmp_path).start()
    api = Server(tmp_path, DARKROOM_RUN_WORKERS="false", DARKROOM_EVENTS_POLL_SECONDS="0.2").start()
    try:
        auth = sign_up(api.url)
        with httpx.Client(base_url=api.url) as client, stream(client, "/api/events", auth) as response:
            task_id = create(worker.url, auth)  # dispatched by the worker server's in-process queue
            events = Reader(response).until_final(task_id)
        assert events[-1]["data"]["status"] == "completed"
    finally:
        api.stop()
        worker.stop()


def test_an_open_stream_ends_cleanly_when_the_server_stops(tmp_path: Path) -> None:
    """uvicorn, told to stop, waits for open responses before the app's shutdown and tells the app
    nothing; the app notices (its signal handler's flag) and ends every stream with the last
    chunk, so the client sees a finished response and the server stops without cutting it."""
    s = Server(tmp_path, DARKROOM_SSE_KEEPALIVE_SECONDS="30").start()
    try:
        auth = sign_up(s.url)
        task_id = create(s.url, auth)
        path = f"/api/tasks/{task_id}/events"
        with httpx.Client(base_url=s.url) as client, stream(client, path, auth) as r:
            reader = Reader(r)
            reader.until_final(task_id)
            assert s.proc is not None
            os.killpg(s.proc.pid, signal.SIGTERM)
            rest = list(reader.lines)  # raises RemoteProtocolError if the stream is cut
        assert not any(line.startswith("data:") for line in rest)
        assert s.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught
        assert "without completing response" not in s.log.read_text()
    finally:
        s.stop()
