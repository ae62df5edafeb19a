"""Failure, retry and cancel through the API, with a scripted provider behind the real pipeline."""

from __future__ import annotations

import asyncio

import httpx

from darkroom.providers.base import ContentFiltered, ProviderUnavailable
from tests.doubles import ScriptedProvider
from tests.support import photo, register, submit, wait_for


def _scripted(*script: object) -> ScriptedProvider:
    return ScriptedProvider("scripted", ("color_enhancement",), list(script))


async def _ledger(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, object]]:
    return (await client.get("/api/credits?limit=100", headers=headers)).json()["data"]["transactions"]


async def test_failure_refunds_and_retry_charges_once(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = _scripted(ProviderUnavailable("down"), ProviderUnavailable("still down"), None)
    async with app_client(providers=[provider], default_ai_provider="scripted") as client:
        headers = await register(client)
        task_id = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
        failed = await wait_for(client, headers, task_id)
        assert failed["status"] == "failed" and failed["errorCode"] == "provider_unavailable"
        assert failed["errorMessage"] == "down"
        assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20

        for expected in ("failed", "completed"):
            r = await client.post(f"/api/tasks/{task_id}/retry", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["data"]["status"] == "pending"
            done = await wait_for(client, headers, task_id)
            assert done["status"] == expected
        assert done["retryCount"] == 2 and done["attempt"] == 3
        assert [a["status"] for a in done["attempts"]] == ["failed", "failed", "completed"]
        assert len(done["resultUrls"]) == 1
        assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 19
        kinds = [t["type"] for t in reversed(await _ledger(client, headers))]
        assert kinds == ["grant", "reserve", "release", "reserve", "release", "reserve", "capture"]

        r = await client.post(f"/api/tasks/{task_id}/retry", headers=headers)
        assert r.status_code == 409 and r.json()["code"] == "task_not_retryable"


async def test_retry_limit(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = _scripted(*[ContentFiltered("no")] * 5)
    async with app_client(providers=[provider], default_ai_provider="scripted") as client:
        headers = await register(client)
        task_id = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
        for _ in range(3):
            assert (await wait_for(client, headers, task_id))["errorCode"] == "content_filtered"
            assert (await client.post(f"/api/tasks/{task_id}/retry", headers=headers)).status_code == 200
        assert (await wait_for(client, headers, task_id))["status"] == "failed"
        r = await client.post(f"/api/tasks/{task_id}/retry", headers=headers)
        assert r.status_code == 409 and r.json()["code"] == "retry_limit_reached"
        assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20


async def test_retry_needs_credits(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = _scripted(ProviderUnavailable("down"))
    async with app_client(providers=[provider], default_ai_provider="scripted", signup_credits=1) as client:
        headers = await register(client)
        t1 = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
        await wait_for(client, headers, t1)
        t2 = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
        assert (await wait_for(client, headers, t2))["status"] == "completed"
        r = await client.post(f"/api/tasks/{t1}/retry", headers=headers)
        assert r.status_code == 402 and r.json()["code"] == "insufficient_credits"
        assert (await client.get(f"/api/tasks/{t1}", headers=headers)).json()["data"]["status"] == "failed"


async def test_cancel_processing_task_releases_credits(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = _scripted(30.0)  # would take 30 s
    async with app_client(providers=[provider], default_ai_provider="scripted") as client:
        headers = await register(client)
        task_id = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
        await wait_for(client, headers, task_id, ("processing",))
        await asyncio.wait_for(provider.started.wait(), 10)
        r = await client.post(f"/api/tasks/{task_id}/cancel", headers=headers)
        assert r.status_code == 200 and r.json()["data"]["status"] == "canceled"
        assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20
        await asyncio.sleep(2.5)  # the worker notices at its next lease renewal and stops
        task = (await client.get(f"/api/tasks/{task_id}", headers=headers)).json()["data"]
        assert task["status"] == "canceled" and task["resultUrls"] == []
        kinds = [t["type"] for t in await _ledger(client, headers)]
        assert kinds == ["release", "reserve", "grant"]
        r = await client.post(f"/api/tasks/{task_id}/cancel", headers=headers)
        assert r.status_code == 409 and r.json()["code"] == "task_not_cancelable"


async def test_cancel_pending_task(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = _scripted(30.0, 30.0)
    async with app_client(
        providers=[provider], default_ai_provider="scripted", worker_concurrency=1
    ) as client:
        headers = await register(client)
        first = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
        second = (await submit(client, headers, "color_enhancement", [photo(64, 64)])).json()["data"]["id"]
        await wait_for(client, headers, first, ("processing",))
        r = await client.post(f"/api/tasks/{second}/cancel", headers=headers)
        assert r.status_code == 200 and r.json()["data"]["status"] == "canceled"
        r = await client.post(f"/api/tasks/{first}/cancel", headers=headers)
        assert r.status_code == 200
        assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20
