"""OpenAI Images against a fake OpenAI server on loopback, through the real API and TaskRunner."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image
from pydantic import ValidationError

from darkroom.config import Settings
from tests.providers.conftest import ExternalApp, ledger, task_row
from tests.providers.fakes.openai import KEY, FakeOpenAI
from tests.providers.fakes.server import serve
from tests.support import photo, register, submit, wait_for


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    async with serve(fake.app) as base:
        fake.base = base  # type: ignore[attr-defined]
        yield fake


def _settings(fake: FakeOpenAI, **extra: object) -> dict[str, object]:
    return {
        "openai_api_key": KEY,
        "openai_base_url": f"{fake.base}/v1",  # type: ignore[attr-defined]
        "default_ai_provider": "openai",
        **extra,
    }


def _mask(width: int, height: int) -> bytes:
    img = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def test_text_to_image_sends_documented_request_and_charges_once(
    external_app: ExternalApp, fake: FakeOpenAI
) -> None:
    async with external_app(**_settings(fake)) as client:
        types = {t["taskType"]: t for t in (await client.get("/api/task-types")).json()["data"]}
        assert types["text_to_image"]["available"] and types["text_to_image"]["providers"] == ["openai"]
        assert types["custom"]["providers"] == ["openai"]
        headers = await register(client)
        r = await submit(
            client, headers, "text_to_image", [], {"prompt": "a red fox", "count": 2, "size": "1536x1024"}
        )
        assert r.status_code == 201, r.text
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        assert task["aiProvider"] == "openai" and task["aiModel"] == "gpt-image-1"
        assert len(task["resultUrls"]) == 2
        image = await client.get(task["resultUrls"][0])
        assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (24, 16)
        row = await task_row(client, task["id"])
        assert row.ai_task_id == "req_1"
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    [sent] = fake.requests
    assert sent.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a red fox",
        "n": 2,
        "size": "1536x1024",
        "quality": "auto",
    }


async def test_custom_edit_sends_every_image_and_the_mask_as_multipart(
    external_app: ExternalApp, fake: FakeOpenAI
) -> None:
    async with external_app(**_settings(fake, openai_model="gpt-image-1-mini")) as client:
        headers = await register(client)
        images = [photo(64, 48, "PNG"), photo(64, 48), _mask(64, 48)]
        names = ["a.png", "b.jpg", "mask.png"]
        r = await submit(client, headers, "custom", images, {"prompt": "add a hat", "mask": True}, names)
        assert r.status_code == 201, r.text
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        assert task["aiModel"] == "gpt-image-1-mini"
    [sent] = fake.requests
    assert sent.path == "/v1/images/edits"
    assert sent.form["model"] == ["gpt-image-1-mini"] and sent.form["prompt"] == ["add a hat"]
    assert sent.form["n"] == ["1"] and sent.form["size"] == ["1024x1024"]
    assert [(f[1], f[2][:4]) for f in sent.files["image[]"]] == [
        ("image/png", b"\x89PNG"),
        ("image/jpeg", b"\xff\xd8\xff\xe0"),
    ]
    [(_, mask_type, mask_bytes)] = sent.files["mask"]
    assert mask_type == "image/png" and mask_bytes == images[2]


async def test_cloud_background_removal_asks_for_a_transparent_png(
    external_app: ExternalApp, fake: FakeOpenAI
) -> None:
    async with external_app(**_settings(fake, routes={"background_removal": ["openai"]})) as client:
        headers = await register(client)
        r = await submit(client, headers, "background_removal", [photo(50, 40)])
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed" and task["aiProvider"] == "openai", task
    [sent] = fake.requests
    assert sent.path == "/v1/images/edits"
    assert sent.form["background"] == ["transparent"] and sent.form["output_format"] == ["png"]


async def test_mask_rules_are_checked_at_upload(external_app: ExternalApp, fake: FakeOpenAI) -> None:
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [photo(64, 48)], {"prompt": "x", "mask": True})
        assert r.status_code == 422 and r.json()["code"] == "mask_without_image"
        r = await submit(
            client, headers, "custom", [photo(64, 48), photo(64, 48)], {"prompt": "x", "mask": True}
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid_mask"
        r = await submit(
            client, headers, "custom", [photo(64, 48), _mask(32, 32)], {"prompt": "x", "mask": True}
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid_mask"
        r = await submit(client, headers, "text_to_image", [], {"size": "1024x1024"})
        assert (
            r.status_code == 422
            and r.json()["code"] == "invalid_parameter"
            and "prompt" in r.json()["message"]
        )
        r = await submit(client, headers, "text_to_image", [], {"prompt": "   "})
        assert r.status_code == 422 and r.json()["code"] == "invalid_parameter"
        r = await submit(client, headers, "text_to_image", [photo()], {"prompt": "x"})
        assert r.status_code == 422 and r.json()["code"] == "too_many_files"
        assert await ledger(client, headers) == (20, ["grant"])
    assert fake.requests == []


async def test_429_with_retry_after_is_retried_and_charged_once(
    external_app: ExternalApp, fake: FakeOpenAI
) -> None:
    fake.script.push("/v1/images/generations", "429", "500")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "a cat"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    ("steps", "code", "requests"),
    [
        (["500", "500", "500"], "provider_unavailable", 3),  # retried, then given up
        (["429-long"], "rate_limited", 1),  # Retry-After beyond our limit: not waited for
        (["slow"], "timeout", 1),  # a POST that timed out is never repeated (no double charge)
        (["filtered"], "content_filtered", 1),  # terminal, not retried
        (["malformed"], "provider_error", 1),
    ],
)
async def test_failures_fail_the_task_and_release_the_credits(
    external_app: ExternalApp, fake: FakeOpenAI, steps: list[str], code: str, requests: int
) -> None:
    fake.script.push("/v1/images/generations", *steps)
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "a cat"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == code, task
        assert task["errorMessage"]
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])
    assert len(fake.requests) == requests


def test_dall_e_models_are_refused_at_start_up() -> None:
    for model in ("dall-e-3", "dall-e-2", "DALL-E-3"):
        with pytest.raises(ValidationError, match="DALL·E 2 and 3 were removed"):
            Settings(_env_file=None, openai_model=model)  # type: ignore[call-arg]
    assert Settings(_env_file=None, openai_model="gpt-image-1.5").openai_model == "gpt-image-1.5"  # type: ignore[call-arg]


async def test_concurrency_limit_per_provider(external_app: ExternalApp, fake: FakeOpenAI) -> None:
    fake.delay = 0.3
    async with external_app(**_settings(fake, openai_concurrency=1), worker_concurrency=3) as client:
        headers = await register(client)
        ids = [
            (await submit(client, headers, "text_to_image", [], {"prompt": f"p{i}"})).json()["data"]["id"]
            for i in range(3)
        ]
        for task_id in ids:
            assert (await wait_for(client, headers, task_id))["status"] == "completed"
    assert len(fake.requests) == 3 and fake.max_in_flight == 1
