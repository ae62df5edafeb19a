"""Routing and fallback: a failing provider hands the same attempt to the next one, charged once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from darkroom.providers.base import ProviderUnavailable
from darkroom.providers.registry import ProviderRegistry
from tests.conftest import AppFactory
from tests.doubles import ScriptedProvider
from tests.providers.conftest import ExternalApp, ledger, task_row
from tests.providers.fakes.openai import KEY as OPENAI_KEY
from tests.providers.fakes.openai import FakeOpenAI
from tests.providers.fakes.replicate import TOKEN as REPLICATE_TOKEN
from tests.providers.fakes.replicate import FakeReplicate
from tests.providers.fakes.server import serve
from tests.providers.fakes.stability import KEY as STABILITY_KEY
from tests.providers.fakes.stability import FakeStability
from tests.support import register, submit, wait_for


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeStability, dict[str, object]]]:
    openai, stability = FakeOpenAI(), FakeStability()
    async with serve(openai.app) as openai_base, serve(stability.app) as stability_base:
        settings: dict[str, object] = {
            "openai_api_key": OPENAI_KEY,
            "openai_base_url": f"{openai_base}/v1",
            "stability_api_key": STABILITY_KEY,
            "stability_base_url": stability_base,
            "routes": {"text_to_image": ["openai", "stability"]},
        }
        yield openai, stability, settings


@pytest.mark.parametrize(
    ("steps", "openai_requests"),
    [
        (["500"] * 3, 3),
        (["429-long"], 1),
        (["slow"], 1),
        # out of money at OpenAI: a 429 that no retry can cure, so not retried
        (["insufficient_quota", "insufficient_quota", "insufficient_quota"], 1),
        (["billing_hard_limit_reached"] * 3, 1),
    ],
)
async def test_next_provider_serves_the_task_when_the_first_is_down(
    external_app: ExternalApp,
    fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]],
    steps: list[str],
    openai_requests: int,
) -> None:
    openai, stability, settings = fakes
    openai.script.push("/v1/images/generations", *steps)
    async with external_app(**settings) as client:
        types = {t["taskType"]: t for t in (await client.get("/api/task-types")).json()["data"]}
        assert types["text_to_image"]["provider"] == "openai"
        assert types["text_to_image"]["providers"] == ["openai", "stability"]
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "a boat"})
        assert r.json()["data"]["aiProvider"] == "openai"
        task_id = r.json()["data"]["id"]
        task = await wait_for(client, headers, task_id)
        assert task["status"] == "completed", task
        assert task["aiProvider"] == "stability" and task["aiModel"] == "stable-image-core"
        assert [a["aiProvider"] for a in task["attempts"]] == ["stability"]
        assert (await task_row(client, task_id)).ai_provider == "stability"
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    assert len(openai.requests) == openai_requests and len(stability.requests) == 1


async def test_content_filtered_is_terminal_and_does_not_fall_over(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, stability, settings = fakes
    openai.script.push("/v1/images/generations", "filtered")
    async with external_app(**settings) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "no"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == "content_filtered", task
        assert task["aiProvider"] == "openai"
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])
    assert len(openai.requests) == 1 and stability.requests == []


async def test_every_provider_down_fails_with_the_last_error_and_refunds(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, stability, settings = fakes
    openai.script.push("/v1/images/generations", *["500"] * 3)
    stability.script.push("/v2beta/stable-image/generate/core", *["500"] * 3)
    async with external_app(**settings) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == "provider_unavailable", task
        assert "stability" in task["errorMessage"]
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])


async def test_fallback_off_uses_only_the_first(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, stability, settings = fakes
    openai.script.push("/v1/images/generations", *["500"] * 3)
    async with external_app(**settings, provider_fallback=False) as client:
        types = {t["taskType"]: t for t in (await client.get("/api/task-types")).json()["data"]}
        assert types["text_to_image"]["providers"] == ["openai"]
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["errorCode"] == "provider_unavailable", task
    assert stability.requests == []


def test_chain_order_from_routes_and_default() -> None:
    a = ScriptedProvider("a", ("x", "y"))
    b = ScriptedProvider("b", ("x",))
    c = ScriptedProvider("c", ("x", "y"))
    registry = ProviderRegistry([a, b, c], default="c")
    assert [r.provider.name for r in registry.chain("x")] == ["c", "a", "b"]
    registry = ProviderRegistry([a, b, c], default="c", routes={"x": ["b", "a"]})
    assert [r.provider.name for r in registry.chain("x")] == ["b", "a"]
    assert [r.provider.name for r in registry.chain("y")] == ["c", "a"]
    assert registry.route("z") is None


async def test_scripted_doubles_fall_over_too(app_client: AppFactory) -> None:
    first = ScriptedProvider("first", ("color_enhancement",), [ProviderUnavailable("down")])
    second = ScriptedProvider("second", ("color_enhancement",))
    async with app_client(providers=[first, second], default_ai_provider="first") as client:
        headers = await register(client)
        r = await submit(client, headers, "color_enhancement")
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed" and task["aiProvider"] == "second", task
    assert len(first.calls) == 1 and len(second.calls) == 1


async def test_falling_over_cancels_the_abandoned_prediction(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, _, settings = fakes
    replicate = FakeReplicate()
    replicate.script.push("outcome", "hold")  # never finishes: our deadline runs out
    async with serve(replicate.app) as base:
        replicate.base = base
        extra = {
            "replicate_api_token": REPLICATE_TOKEN,
            "replicate_base_url": base,
            "routes": {"text_to_image": ["replicate", "openai"]},
            "provider_deadline_seconds": 0.5,
        }
        async with external_app(**{**settings, **extra}) as client:
            headers = await register(client)
            r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
            task = await wait_for(client, headers, r.json()["data"]["id"])
            assert task["status"] == "completed" and task["aiProvider"] == "openai", task
            assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    [pid] = replicate.predictions
    assert replicate.predictions[pid]["status"] == "canceled"
    assert len(replicate.creates) == 1 and len(openai.requests) == 1


async def test_stability_out_of_credit_402_fails_over_at_once(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, stability, settings = fakes
    stability.script.push("/v2beta/stable-image/generate/core", "402", "402", "402")
    settings = {**settings, "routes": {"text_to_image": ["stability", "openai"]}}
    async with external_app(**settings) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "a kite"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed" and task["aiProvider"] == "openai", task
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    assert len(stability.requests) == 1 and len(openai.requests) == 1


async def test_quota_message_tells_the_operator(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, _stability, settings = fakes
    openai.script.push("/v1/images/generations", "insufficient_quota")
    async with external_app(**{**settings, "routes": {"text_to_image": ["openai"]}}) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "a kite"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == "provider_unavailable", task
        assert "insufficient_quota" in task["errorMessage"] and "operator" in task["errorMessage"]
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])
    assert len(openai.requests) == 1
