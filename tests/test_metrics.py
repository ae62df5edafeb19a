"""GET /metrics: Prometheus text, database gauges read at scrape time, process-local histograms."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.doubles import ScriptedProvider
from tests.support import photo, register, submit, wait_for


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_after_tasks(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted") as client:
        client: httpx.AsyncClient
        headers = await register(client)
        ids = [
            (await submit(client, headers, "color_enhancement", [photo(32, 32)])).json()["data"]["id"]
            for _ in range(2)
        ]
        for task_id in ids:
            await wait_for(client, headers, task_id)
        await client.get(f"/api/tasks/{ids[0]}", headers=headers)
        r = await client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        m = _samples(r.text)
    assert m[("darkroom_tasks", (("status", "completed"), ("task_type", "color_enhancement")))] == 2
    assert m[("darkroom_tasks", (("status", "pending"), ("task_type", "color_enhancement")))] == 0
    assert m[("darkroom_queue_depth", ())] == 0
    assert m[("darkroom_credits_total", (("kind", "reserved"),))] == 2
    assert m[("darkroom_credits_total", (("kind", "captured"),))] == 2
    assert m[("darkroom_credits_total", (("kind", "released"),))] == 0
    route = (("method", "GET"), ("route", "/api/tasks/{task_id}"), ("status", "200"))
    assert m[("darkroom_http_requests_total", route)] >= 1
    assert not any("route" in dict(labels) and ids[0] in dict(labels)["route"] for _, labels in m)
    completed = (("outcome", "completed"), ("task_type", "color_enhancement"))
    assert m[("darkroom_task_duration_seconds_count", completed)] >= 2
    latency = (("outcome", "ok"), ("provider", "scripted"), ("task_type", "color_enhancement"))
    assert m[("darkroom_provider_latency_seconds_count", latency)] >= 2


async def test_queue_depth_counts_pending_tasks(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted", run_workers=False) as client:
        headers = await register(client)
        for _ in range(3):
            assert (await submit(client, headers, "color_enhancement", [photo(32, 32)])).status_code == 201
        m = _samples((await client.get("/metrics")).text)
    assert m[("darkroom_queue_depth", ())] == 3
    assert m[("darkroom_credits_total", (("kind", "reserved"),))] == 3


async def test_metrics_can_be_turned_off(app_client) -> None:  # type: ignore[no-untyped-def]
    async with app_client(metrics_enabled=False) as client:
        assert (await client.get("/metrics")).status_code == 404
