"""The task stream's lean opening (events/endpoints.py) and ``EventStream`` in process: the same
refusals as the other task routes, the events' bytes, the end of a stream when its client leaves
and when the server stops. Streams are driven through raw ASGI calls (httpx's ASGI transport
waits for a response's end, and a stream has none)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
from sqlalchemy import update

from darkroom.models import User
from darkroom.models.base import new_id
from tests.support import photo, register, submit, wait_for

EVENT = re.compile(rb"id: (\d+)\r\ndata: ([^\r\n]+)\r\n\r\n")


class RawStream:
    """One ASGI request to the app, its messages kept; ``leave()`` is the client going away."""

    def __init__(self, app: Any, path: str, headers: dict[str, str]) -> None:
        path, _, query = path.partition("?")
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"testserver"), *raw_headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.messages: list[dict[str, Any]] = []
        self._gone = asyncio.Event()
        self._asked = False
        self._sent = asyncio.Event()
        self.call = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._sent.set()

    def leave(self) -> None:
        self._gone.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    def events(self) -> list[tuple[int, dict[str, Any]]]:
        return [(int(i), json.loads(d)) for i, d in EVENT.findall(self.body)]

    async def until(self, final_status: str) -> list[tuple[int, dict[str, Any]]]:
        async with asyncio.timeout(30):
            while not any(data["status"] == final_status for _, data in self.events()):
                self._sent.clear()
                await self._sent.wait()
        return self.events()


async def _user_id(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    user_id: str = (await client.get("/api/me", headers=headers)).json()["data"]["user"]["id"]
    return user_id


async def _done_task(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    task_id: str = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
    await wait_for(client, headers, task_id)
    return task_id


async def test_a_stream_replays_the_task_and_ends_when_its_client_leaves(client: httpx.AsyncClient) -> None:
    app = client.app  # type: ignore[attr-defined]
    hub = app.state.ctx.events
    headers = await register(client)
    user_id = await _user_id(client, headers)
    task_id = await _done_task(client, headers)

    stream = RawStream(app, f"/api/tasks/{task_id}/events", headers)
    events = await stream.until("completed")
    start = stream.messages[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert dict(start["headers"]) == {
        b"cache-control": b"no-cache",
        b"x-accel-buffering": b"no",
        b"connection": b"keep-alive",
        b"content-type": b"text/event-stream; charset=utf-8",
    }
    # the whole body is events: "id: N", one "data:" line of JSON, a blank line; nothing else
    assert EVENT.sub(b"", stream.body) == b""
    assert events[0][1]["status"] == "pending"
    assert all(data["taskId"] == task_id for _, data in events)
    positions, seqs = [i for i, _ in events], [data["seq"] for _, data in events]
    assert positions == sorted(set(positions)) and seqs == sorted(set(seqs))
    if app.state.ctx.db.is_sqlite:  # on PostgreSQL the id is the commit-ordered position instead
        assert positions == seqs
    assert set(events[-1][1]) == {"taskId", "seq", "kind", "status", "progress", "at"}
    assert hub.listeners(user_id) == 1

    stream.leave()
    async with asyncio.timeout(30):
        await stream.call  # the response returns: the stream is over
    assert hub.listeners(user_id) == 0

    # Resuming after the second event (the header, then the query form) replays only what followed.
    second = events[1][0]
    for path, extra in (
        (f"/api/tasks/{task_id}/events", {"Last-Event-ID": str(second)}),
        (f"/api/tasks/{task_id}/events?lastEventId={second}", {}),
    ):
        resumed = RawStream(app, path, {**headers, **extra})
        assert await resumed.until("completed") == events[2:]
        resumed.leave()
        await resumed.call


async def test_streams_end_when_the_server_stops(client: httpx.AsyncClient) -> None:
    app = client.app  # type: ignore[attr-defined]
    headers = await register(client)
    task_id = await _done_task(client, headers)
    streams = [RawStream(app, f"/api/tasks/{task_id}/events", headers)]
    streams.append(RawStream(app, "/api/events", headers))
    await streams[0].until("completed")
    async with asyncio.timeout(30):
        while len(streams[1].messages) < 1:  # the user stream has answered (no events: none new)
            await asyncio.sleep(0.01)
    app.state.ctx.events.close()  # what the app does when uvicorn is told to stop
    later = RawStream(app, f"/api/tasks/{task_id}/events", headers)  # opened while stopping
    for stream in (*streams, later):
        async with asyncio.timeout(30):
            await stream.call
        assert stream.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert later.events() == []  # it ends at once


async def test_opening_a_task_stream_refuses_like_the_other_task_routes(client: httpx.AsyncClient) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    alice, bob = await register(client), await register(client)
    task_id = (await submit(client, alice, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]

    async def code(path: str, headers: dict[str, str]) -> str:
        r = await client.get(path, headers=headers)  # refusals end; an open stream would not
        assert r.status_code in (401, 404), r.text
        assert r.json()["success"] is False
        return str(r.json()["code"])

    stream = f"/api/tasks/{task_id}/events"
    assert await code(stream, bob) == "task_not_found"
    assert await code(f"/api/tasks/{new_id()}/events", alice) == "task_not_found"
    assert await code(stream, {}) == "unauthorized"
    assert await code(stream, {"Authorization": "Bearer bad"}) == "invalid_token"
    user_id = await _user_id(client, bob)
    async with ctx.db.transaction() as session:
        await session.execute(update(User).where(User.id == user_id).values(is_active=False))
    assert await code(f"/api/tasks/{new_id()}/events", bob) == "invalid_token"
    await client.post("/api/auth/logout", headers=alice)
    assert await code(stream, alice) == "token_revoked"
    # GET only, as before: HEAD would open a stream that never ends
    assert (await client.head(stream, headers=alice)).status_code == 405
