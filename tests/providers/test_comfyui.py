"""ComfyUI against a fake ComfyUI server on loopback: workflow templates, upload, history, view,
interrupt on cancel."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from darkroom.providers.comfyui import fill
from tests.providers.conftest import ExternalApp, ledger, task_row
from tests.providers.fakes.comfyui import FakeComfyUI
from tests.providers.fakes.server import serve
from tests.support import photo, register, submit, wait_for


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyUI]:
    fake = FakeComfyUI()
    async with serve(fake.app) as base:
        fake.base = base  # type: ignore[attr-defined]
        yield fake


def _settings(fake: FakeComfyUI, **extra: object) -> dict[str, object]:
    return {"comfyui_url": fake.base, "default_ai_provider": "comfyui", **extra}  # type: ignore[attr-defined]


def test_placeholders_keep_their_types() -> None:
    template = {"a": "{{seed}}", "b": ["{{prompt}}", 3], "c": "x {{prompt}} {{unknown}}"}
    assert fill(template, {"seed": 5, "prompt": "cat"}) == {"a": 5, "b": ["cat", 3], "c": "x cat {{unknown}}"}


async def test_text_to_image_queues_the_filled_workflow_and_reads_the_outputs(
    external_app: ExternalApp, fake: FakeComfyUI
) -> None:
    async with external_app(**_settings(fake, comfyui_checkpoint="dreamshaper.safetensors")) as client:
        headers = await register(client)
        params = {
            "prompt": "a castle",
            "negative_prompt": "blurry",
            "size": "1536x1024",
            "seed": 11,
            "count": 2,
        }
        r = await submit(client, headers, "text_to_image", [], params)
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        assert task["aiProvider"] == "comfyui" and task["aiModel"] == "dreamshaper.safetensors"
        [pid] = fake.prompts
        assert (await task_row(client, task["id"])).ai_task_id == pid
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    queued = next(r for r in fake.requests if r.path == "/prompt")
    assert isinstance(queued.json["client_id"], str) and queued.json["client_id"]
    workflow = queued.json["prompt"]
    assert workflow["6"]["inputs"]["text"] == "a castle" and workflow["7"]["inputs"]["text"] == "blurry"
    assert workflow["3"]["inputs"]["seed"] == 11
    assert workflow["5"]["inputs"] == {"width": 1536, "height": 1024, "batch_size": 2}
    assert workflow["4"]["inputs"]["ckpt_name"] == "dreamshaper.safetensors"
    views = [r for r in fake.requests if r.path == "/view"]
    assert [v.query["type"] for v in views] == ["output"]


async def test_custom_uploads_the_input_and_points_load_image_at_it(
    external_app: ExternalApp, fake: FakeComfyUI, tmp_path: Path
) -> None:
    source = photo(48, 32, "PNG")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [source], {"prompt": "winter"}, ["in.png"])
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
    [(name, data)] = fake.uploads.items()
    assert data == source and name.endswith(".png")
    upload = next(r for r in fake.requests if r.path == "/upload/image")
    assert upload.form["overwrite"] == ["true"]
    workflow = next(r for r in fake.requests if r.path == "/prompt").json["prompt"]
    assert workflow["1"]["inputs"]["image"] == name


async def test_operator_workflows_override_the_shipped_ones(
    external_app: ExternalApp, fake: FakeComfyUI, tmp_path: Path
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "text_to_image.json").write_text(
        json.dumps({"1": {"class_type": "Mine", "inputs": {"t": "{{prompt}}"}}})
    )
    async with external_app(**_settings(fake, comfyui_workflows_dir=folder)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "own"})
        assert (await wait_for(client, headers, r.json()["data"]["id"]))["status"] == "completed"
    assert next(r for r in fake.requests if r.path == "/prompt").json["prompt"] == {
        "1": {"class_type": "Mine", "inputs": {"t": "own"}}
    }


@pytest.mark.parametrize(
    ("script", "code"), [(("prompt", "invalid"), "invalid_input"), (("outcome", "error"), "provider_error")]
)
async def test_refused_or_failed_workflows_are_not_charged(
    external_app: ExternalApp, fake: FakeComfyUI, script: tuple[str, str], code: str
) -> None:
    fake.script.push(*script)
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == code, task
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])


async def test_cancel_interrupts_comfyui(external_app: ExternalApp, fake: FakeComfyUI) -> None:
    fake.script.push("outcome", "hold")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "long"})
        task_id = r.json()["data"]["id"]
        deadline = time.monotonic() + 30
        while (await task_row(client, task_id)).ai_task_id is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        [pid] = fake.prompts
        assert (await client.post(f"/api/tasks/{task_id}/cancel", headers=headers)).status_code == 200
        while not any(r.path == "/interrupt" for r in fake.requests):
            assert time.monotonic() < deadline, "no /interrupt"
            await asyncio.sleep(0.05)
    interrupt = next(r for r in fake.requests if r.path == "/interrupt")
    delete = next(r for r in fake.requests if r.path == "/queue")
    assert interrupt.json == {"prompt_id": pid} and delete.json == {"delete": [pid]}


async def test_websocket_progress_wakes_the_wait(external_app: ExternalApp, fake: FakeComfyUI) -> None:
    fake.ws_enabled = True
    # Polling alone would look at /history again only after 60 s; the websocket's
    # "executing: node null" message is what lets the task finish well within wait_for's 30 s.
    async with external_app(**_settings(fake, provider_poll_seconds=60)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "fast"})
        task = await wait_for(client, headers, r.json()["data"]["id"], timeout=30)
        assert task["status"] == "completed", task
    queued = next(r for r in fake.requests if r.path == "/prompt")
    assert fake.ws_clients == [queued.json["client_id"]]
