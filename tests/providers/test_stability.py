"""Stability AI against a fake Stability server on loopback, through the real API and TaskRunner."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.providers.conftest import ExternalApp, ledger, task_row
from tests.providers.fakes.server import serve
from tests.providers.fakes.stability import KEY, FakeStability
from tests.support import photo, register, submit, wait_for


@pytest.fixture
async def fake() -> AsyncIterator[FakeStability]:
    fake = FakeStability()
    async with serve(fake.app) as base:
        fake.base = base  # type: ignore[attr-defined]
        yield fake


def _settings(fake: FakeStability, **extra: object) -> dict[str, object]:
    return {
        "stability_api_key": KEY,
        "stability_base_url": fake.base,  # type: ignore[attr-defined]
        "default_ai_provider": "stability",
        **extra,
    }


async def test_generate_core_is_multipart_with_json_accept(
    external_app: ExternalApp, fake: FakeStability
) -> None:
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        params = {
            "prompt": "a lighthouse",
            "count": 2,
            "size": "1024x1536",
            "seed": 7,
            "negative_prompt": "fog",
        }
        r = await submit(client, headers, "text_to_image", [], params)
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        assert task["aiProvider"] == "stability" and task["aiModel"] == "stable-image-core"
        assert len(task["resultUrls"]) == 2
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    assert [r.path for r in fake.requests] == ["/v2beta/stable-image/generate/core"] * 2
    first, second = fake.requests
    assert first.headers["authorization"] == f"Bearer {KEY}" and first.headers["accept"] == "application/json"
    assert first.headers["content-type"].startswith("multipart/form-data")
    assert first.form == {
        "prompt": ["a lighthouse"],
        "aspect_ratio": ["2:3"],
        "output_format": ["png"],
        "negative_prompt": ["fog"],
        "seed": ["7"],
    }
    assert second.form["seed"] == ["8"]


async def test_async_edit_stores_the_generation_id_then_polls_results(
    external_app: ExternalApp, fake: FakeStability
) -> None:
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [photo(60, 40)], {"prompt": "on a beach at sunset"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        row = await task_row(client, task["id"])
    [gid] = fake.results
    assert row.ai_task_id == gid and len(gid) == 64
    create = fake.requests[0]
    assert create.path == "/v2beta/stable-image/edit/replace-background-and-relight"
    assert create.form["background_prompt"] == ["on a beach at sunset"]
    assert create.files["subject_image"][0][1] == "image/jpeg"
    polls = [r for r in fake.requests if r.path == f"/v2beta/results/{gid}"]
    assert len(polls) == fake.polls_before_done + 1


async def test_inpaint_with_a_mask_and_cloud_background_removal(
    external_app: ExternalApp, fake: FakeStability
) -> None:
    from tests.providers.test_openai import _mask

    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(
            client, headers, "custom", [photo(64, 48), _mask(64, 48)], {"prompt": "a hat", "mask": True}
        )
        assert (await wait_for(client, headers, r.json()["data"]["id"]))["status"] == "completed"
        r = await submit(client, headers, "background_removal", [photo(64, 48)])
        assert (await wait_for(client, headers, r.json()["data"]["id"]))["status"] == "completed"
    inpaint, cutout = fake.requests
    assert inpaint.path == "/v2beta/stable-image/edit/inpaint"
    assert set(inpaint.files) == {"image", "mask"} and inpaint.form["prompt"] == ["a hat"]
    assert cutout.path == "/v2beta/stable-image/edit/remove-background" and set(cutout.files) == {"image"}


@pytest.mark.parametrize("step", ["moderation", "filtered"])
async def test_moderation_is_content_filtered_and_not_charged(
    external_app: ExternalApp, fake: FakeStability, step: str
) -> None:
    fake.script.push("/v2beta/stable-image/generate/core", step)
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "something"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == "content_filtered", task
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])
    assert len(fake.requests) == 1


async def test_seed_v1_sdxl_text_to_image(external_app: ExternalApp, fake: FakeStability) -> None:
    async with external_app(**_settings(fake, stability_engine="sdxl-v1")) as client:
        headers = await register(client)
        r = await submit(
            client, headers, "text_to_image", [], {"prompt": "a robot", "count": 3, "size": "1536x1024"}
        )
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed" and len(task["resultUrls"]) == 3, task
        assert task["aiModel"] == "stable-diffusion-xl-1024-v1-0"
        fake.script.push("/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image", "filtered")
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["errorCode"] == "content_filtered", task
    sent = fake.requests[0]
    assert sent.path == "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
    assert sent.json == {
        "text_prompts": [{"text": "a robot", "weight": 1}],
        "cfg_scale": 7,
        "width": 1216,
        "height": 832,
        "samples": 3,
        "steps": 30,
    }


async def test_malformed_answer_is_a_provider_error(external_app: ExternalApp, fake: FakeStability) -> None:
    fake.script.push("/v2beta/stable-image/generate/core", "malformed")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == "provider_error", task
