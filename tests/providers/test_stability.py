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


async def test_edit_without_a_mask_is_sd3_image_to_image(
    external_app: ExternalApp, fake: FakeStability
) -> None:
    source = photo(96, 64)
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [source], {"prompt": "make it winter", "seed": 5})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed" and task["aiModel"] == "sd3", task
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    [edit] = fake.requests
    assert edit.path == "/v2beta/stable-image/generate/sd3"
    assert edit.form == {
        "output_format": ["png"],
        "seed": ["5"],
        "mode": ["image-to-image"],
        "prompt": ["make it winter"],
        "strength": ["0.7"],
    }
    assert [(f[1], f[2]) for f in edit.files["image"]] == [("image/jpeg", source)]


async def test_an_asynchronous_answer_stores_the_generation_id_then_polls_results(
    external_app: ExternalApp, fake: FakeStability
) -> None:
    fake.script.push("/v2beta/stable-image/generate/sd3", "async")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [photo(96, 64)], {"prompt": "on a beach at sunset"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        row = await task_row(client, task["id"])
    [gid] = fake.results
    assert row.ai_task_id == gid and len(gid) == 64
    polls = [r for r in fake.requests if r.path == f"/v2beta/results/{gid}"]
    assert len(polls) == fake.polls_before_done + 1


async def test_inpaint_with_a_mask_and_cloud_background_removal(
    external_app: ExternalApp, fake: FakeStability
) -> None:
    from tests.providers.test_openai import _mask

    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(
            client, headers, "custom", [photo(96, 64), _mask(96, 64)], {"prompt": "a hat", "mask": True}
        )
        assert (await wait_for(client, headers, r.json()["data"]["id"]))["status"] == "completed"
        r = await submit(client, headers, "background_removal", [photo(96, 64)])
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


async def test_style_transfer_with_a_style_image_is_control_style_transfer(
    external_app: ExternalApp, fake: FakeStability
) -> None:
    content, style = photo(96, 64), photo(80, 80, "PNG")
    async with external_app(**_settings(fake, routes={"style_transfer": ["stability"]})) as client:
        types = {t["taskType"]: t for t in (await client.get("/api/task-types")).json()["data"]}
        assert types["style_transfer"]["providers"] == ["stability"]
        headers = await register(client)
        r = await submit(client, headers, "style_transfer", [content, style], {"strength": 0.6})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        assert task["aiProvider"] == "stability" and task["aiModel"] == "style-transfer"
        assert await ledger(client, headers) == (20 - 2, ["capture", "reserve", "grant"])
    [sent] = fake.requests
    assert sent.path == "/v2beta/stable-image/control/style-transfer"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.form == {"output_format": ["png"], "style_strength": ["0.6"]}
    assert [f[2] for f in sent.files["init_image"]] == [content]
    assert [f[2] for f in sent.files["style_image"]] == [style]


async def test_named_style_is_control_structure_with_a_prompt_naming_it(
    external_app: ExternalApp, fake: FakeStability
) -> None:
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "style_transfer", [photo(96, 64)], {"style": "stained_glass"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed" and task["aiModel"] == "structure", task
    [sent] = fake.requests
    assert sent.path == "/v2beta/stable-image/control/structure"
    assert set(sent.files) == {"image"}
    assert "stained glass" in sent.form["prompt"][0]
    assert sent.form["control_strength"] == ["0.60"] and sent.form["output_format"] == ["png"]


@pytest.mark.parametrize(
    ("step", "status", "code"),
    [("bytes", "completed", None), ("bytes-filtered", "failed", "content_filtered")],
)
async def test_image_bytes_answers_with_a_finish_reason_header(
    external_app: ExternalApp, fake: FakeStability, step: str, status: str, code: str | None
) -> None:
    fake.script.push("/v2beta/stable-image/generate/core", step)
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "a kite"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == status and task["errorCode"] == code, task
        if status == "completed":
            image = await client.get(task["resultUrls"][0])
            assert image.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("image", "limit"),
    [
        (photo(600, 40), "64 px"),  # a side under Stability's minimum
        (photo(400, 100), "aspect ratio"),  # 4:1, beyond 2.5:1
    ],
)
async def test_inputs_beyond_stabilitys_limits_are_refused_before_any_charge(
    external_app: ExternalApp, fake: FakeStability, image: bytes, limit: str
) -> None:
    async with external_app(**_settings(fake, routes={"custom": ["stability"]})) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [image], {"prompt": "x"})
        assert r.status_code == 422 and r.json()["code"] == "unsupported_input", r.text
        assert "stability" in r.json()["message"] and limit in r.json()["message"]
        assert await ledger(client, headers) == (20, ["grant"])
    assert fake.requests == []
