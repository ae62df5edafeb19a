"""Per-provider input limits: skipped at submit, refused with unsupported_input when none fits,
skipped again when a worker falls over to a provider that cannot take the inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from darkroom.providers.base import TaskTypeSpec
from darkroom.providers.limits import Facts, refusal
from tests.providers.conftest import ExternalApp, ledger
from tests.providers.fakes.openai import KEY as OPENAI_KEY
from tests.providers.fakes.openai import FakeOpenAI
from tests.providers.fakes.server import serve
from tests.providers.fakes.stability import KEY as STABILITY_KEY
from tests.providers.fakes.stability import FakeStability
from tests.support import photo, register, submit, wait_for

SPEC = TaskTypeSpec(
    task_type="custom",
    parameters={},
    max_inputs=2,
    max_input_bytes=1000,
    max_pixels=10_000,
    min_side=10,
    max_aspect=2.5,
)


def test_refusal_names_the_limit() -> None:
    ok = Facts("image/png", 500, 100, 80)
    assert refusal(SPEC, [ok], None) is None
    assert refusal(SPEC, [ok] * 3, None) == "takes at most 2 input image(s), 3 given"
    assert refusal(SPEC, [ok], ok) == "takes no mask"
    assert refusal(SPEC, [Facts("image/gif", 5, 20, 20)], None) == (
        "takes JPEG, PNG, WebP only (image 1 is image/gif)"
    )
    assert "(image 1 has 1001 bytes)" in (refusal(SPEC, [Facts("image/png", 1001, 20, 20)], None) or "")
    assert "10,000 pixels" in (refusal(SPEC, [Facts("image/png", 5, 101, 100)], None) or "")
    assert "at least 10 px" in (refusal(SPEC, [Facts("image/png", 5, 9, 20)], None) or "")
    assert "2.5:1" in (refusal(SPEC, [Facts("image/png", 5, 30, 11)], None) or "")


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeStability, dict[str, object]]]:
    openai, stability = FakeOpenAI(), FakeStability()
    async with serve(openai.app) as openai_base, serve(stability.app) as stability_base:
        yield (
            openai,
            stability,
            {
                "openai_api_key": OPENAI_KEY,
                "openai_base_url": f"{openai_base}/v1",
                "stability_api_key": STABILITY_KEY,
                "stability_base_url": stability_base,
                "max_files": 20,
            },
        )


async def test_a_provider_that_cannot_take_the_input_is_skipped_at_submit(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, stability, settings = fakes
    async with external_app(**settings, routes={"custom": ["stability", "openai"]}) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [photo(600, 40)], {"prompt": "wider"})
        assert r.status_code == 201 and r.json()["data"]["aiProvider"] == "openai", r.text
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed" and task["aiProvider"] == "openai", task
        # what Stability can take still goes to Stability first
        r = await submit(client, headers, "custom", [photo(96, 64)], {"prompt": "fits"})
        assert r.json()["data"]["aiProvider"] == "stability"
        assert (await wait_for(client, headers, r.json()["data"]["id"]))["aiProvider"] == "stability"
    assert len(openai.requests) == 1 and len(stability.requests) == 1


async def test_openai_takes_up_to_16_images_and_none_takes_17(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, stability, settings = fakes
    async with external_app(**settings, routes={"custom": ["stability", "openai"]}) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [photo(64, 64)] * 16, {"prompt": "a collage"})
        assert r.status_code == 201 and r.json()["data"]["aiProvider"] == "openai", r.text
        assert (await wait_for(client, headers, r.json()["data"]["id"]))["status"] == "completed"
        r = await submit(client, headers, "custom", [photo(64, 64)] * 17, {"prompt": "too many"})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "too_many_files"
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    [edit] = openai.requests
    assert len(edit.files["image[]"]) == 16
    assert stability.requests == []


async def test_no_provider_fits_is_unsupported_input_before_any_charge(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, stability, settings = fakes
    async with external_app(**settings, routes={"background_removal": ["stability", "openai"]}) as client:
        headers = await register(client)
        # Stability: a side under 64 px; OpenAI: one image per cut-out, two given
        r = await submit(client, headers, "background_removal", [photo(600, 40), photo(600, 40)])
        assert r.status_code == 422 and r.json()["code"] == "unsupported_input", r.text
        message = r.json()["message"]
        assert "stability needs at least 64 px" in message and "openai takes at most 1" in message
        assert await ledger(client, headers) == (20, ["grant"])
    assert openai.requests == [] and stability.requests == []


async def test_failover_skips_a_provider_that_cannot_take_the_inputs(
    external_app: ExternalApp, fakes: tuple[FakeOpenAI, FakeStability, dict[str, object]]
) -> None:
    openai, stability, settings = fakes
    openai.script.push("/v1/images/edits", "500", "500", "500")
    async with external_app(**settings, routes={"custom": ["openai", "stability"]}) as client:
        headers = await register(client)
        # three images: OpenAI takes them, Stability edits one image only
        r = await submit(client, headers, "custom", [photo(96, 64)] * 3, {"prompt": "x"})
        assert r.json()["data"]["aiProvider"] == "openai"
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == "provider_unavailable", task
        assert "stability cannot take this task's inputs" in task["errorMessage"]
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])
    assert len(openai.requests) == 3 and stability.requests == []
