"""The lean status route (tasks/status.py): same answers as the ORM routes, auth rules intact."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
from sqlalchemy import update

from darkroom.auth.security import issue_token
from darkroom.models import User
from darkroom.models.base import new_id
from tests.support import photo, register, submit, wait_for


async def _user_id(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    user_id: str = (await client.get("/api/me", headers=headers)).json()["data"]["user"]["id"]
    return user_id


def _path(url: str) -> str:
    return url.partition("?")[0]  # the signature's expiry may differ by a second between reads


async def test_status_agrees_with_the_full_task_and_its_results_download(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    task_id = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
    await wait_for(client, headers, task_id)

    r = await client.get(f"/api/tasks/{task_id}/status", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "private, no-cache"
    body = r.json()
    assert body["success"] is True and body["message"] is None
    status = body["data"]
    full = (await client.get(f"/api/tasks/{task_id}", headers=headers)).json()["data"]
    for field in (
        "id",
        "taskNo",
        "status",
        "progress",
        "errorCode",
        "errorMessage",
        "retryCount",
        "seq",
        "updatedAt",
    ):
        assert status[field] == full[field], field
    assert status["status"] == "completed" and len(status["resultUrls"]) == 1
    assert [_path(u) for u in status["resultUrls"]] == [_path(u) for u in full["resultUrls"]]
    assert r.headers["etag"] == f'W/"{task_id}-{status["seq"]}"'
    assert (await client.get(status["resultUrls"][0])).status_code == 200

    r = await client.get(
        f"/api/tasks/{task_id}/status", headers={**headers, "If-None-Match": r.headers["etag"]}
    )
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == f'W/"{task_id}-{status["seq"]}"'
    assert r.headers["cache-control"] == "private, no-cache"
    r = await client.get(f"/api/tasks/{task_id}/status", headers={**headers, "If-None-Match": 'W/"x-1"'})
    assert r.status_code == 200


async def test_missing_and_other_users_tasks_are_404(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    task_id = (await submit(client, alice, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
    for headers, path in ((bob, task_id), (alice, "nope"), (alice, new_id())):
        r = await client.get(f"/api/tasks/{path}/status", headers=headers)
        body = r.json()
        assert r.status_code == 404 and body["success"] is False and body["code"] == "task_not_found"


async def test_a_seen_token_is_still_refused_once_revoked_expired_or_its_user_disabled(
    client: httpx.AsyncClient,
) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    secret = ctx.settings.secret_key
    headers = await register(client)
    user_id = await _user_id(client, headers)
    task_id = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
    path = f"/api/tasks/{task_id}/status"

    async def code(token_headers: dict[str, str]) -> str:
        r = await client.get(path, headers=token_headers)
        assert r.status_code in (200, 401), r.text
        return "ok" if r.status_code == 200 else str(r.json()["code"])

    assert await code(headers) == "ok"  # the token is now decoded and remembered
    await client.post("/api/auth/logout", headers=headers)
    assert await code(headers) == "token_revoked"

    short = issue_token(user_id, secret, expires_in=1, version=1).token
    assert await code({"Authorization": f"Bearer {short}"}) == "ok"
    while time.time() < jwt_exp(short):
        await asyncio.sleep(0.1)
    assert await code({"Authorization": f"Bearer {short}"}) == "token_expired"

    fresh = {"Authorization": f"Bearer {issue_token(user_id, secret, expires_in=600, version=1).token}"}
    assert await code(fresh) == "ok"
    async with ctx.db.transaction() as session:
        await session.execute(update(User).where(User.id == user_id).values(is_active=False))
    assert await code(fresh) == "invalid_token"

    stranger = issue_token(new_id(), secret, expires_in=600).token
    assert await code({"Authorization": f"Bearer {stranger}"}) == "invalid_token"
    assert await code({"Authorization": "Bearer bad"}) == "invalid_token"
    forged = issue_token(
        user_id, "another secret, long enough for HS256 keys", expires_in=600, version=1
    ).token
    assert await code({"Authorization": f"Bearer {forged}"}) == "invalid_token"
    assert await code({}) == "unauthorized"


def jwt_exp(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def test_the_browser_session_cookie_reads_the_status(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    task_id = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
    token = headers["Authorization"].removeprefix("Bearer ")
    client.cookies.set("darkroom_session", token)
    r = await client.get(f"/api/tasks/{task_id}/status")
    assert r.status_code == 200 and r.json()["data"]["id"] == task_id
    client.cookies.set("darkroom_session", "bad")
    r = await client.get(f"/api/tasks/{task_id}/status")
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
