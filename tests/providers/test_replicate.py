"""Replicate against a fake Replicate server on loopback: predictions, polling, outputs copied into
our storage, resume after a crash, cancel, signed webhooks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from darkroom.app import build_context
from darkroom.models import ProviderCallback, Task, TaskStatus
from darkroom.providers.replicate import ReplicateProvider
from darkroom.providers.webhooks import sign
from darkroom.tasks.jobs import TaskRunner
from tests.providers.conftest import ExternalApp, ledger, task_row
from tests.providers.fakes.replicate import TOKEN, FakeReplicate
from tests.providers.fakes.server import serve
from tests.support import photo, register, submit, wait_for

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplicate]:
    fake = FakeReplicate()
    async with serve(fake.app) as base:
        fake.base = base
        yield fake


def _settings(fake: FakeReplicate, **extra: object) -> dict[str, object]:
    return {
        "replicate_api_token": TOKEN,
        "replicate_base_url": fake.base,
        "replicate_models": {
            "text_to_image": "black-forest-labs/flux-schnell",
            "custom": "acme/editor:abc123",
        },
        "default_ai_provider": "replicate",
        **extra,
    }


async def _until(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_prediction_is_created_polled_and_its_output_copied(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(
            client, headers, "text_to_image", [], {"prompt": "a tiny house", "count": 2, "seed": 3}
        )
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        assert task["aiProvider"] == "replicate" and task["aiModel"] == "black-forest-labs/flux-schnell"
        assert len(task["resultUrls"]) == 2 and all(fake.base not in u for u in task["resultUrls"])
        copied = await client.get(task["resultUrls"][0])
        assert copied.status_code == 200 and copied.content.startswith(b"\x89PNG")
        [pid] = fake.predictions
        assert (await task_row(client, task["id"])).ai_task_id == pid == task["aiTaskId"]
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    [create] = fake.creates
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    assert create.json == {
        "input": {
            "prompt": "a tiny house",
            "num_outputs": 2,
            "aspect_ratio": "1:1",
            "output_format": "png",
            "seed": 3,
        }
    }
    gets = [r for r in fake.requests if r.path == f"/v1/predictions/{pid}"]
    assert len(gets) == fake.polls_before_done
    assert sorted(r.path for r in fake.requests if r.path.startswith("/files/")) == [
        f"/files/{pid}_0.png",
        f"/files/{pid}_1.png",
    ]


async def test_versioned_model_and_data_uri_inputs(external_app: ExternalApp, fake: FakeReplicate) -> None:
    source = photo(40, 30)
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "custom", [source], {"prompt": "make it snow"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
    [create] = fake.creates
    assert create.path == "/v1/predictions" and create.json["version"] == "abc123"
    assert create.json["input"]["prompt"] == "make it snow"
    assert create.json["input"]["image"] == "data:image/jpeg;base64," + base64.b64encode(source).decode()


@pytest.mark.parametrize(
    ("outcome", "code"),
    [("nsfw", "content_filtered"), ("error", "provider_error"), ("evil-url", "provider_error")],
)
async def test_failed_predictions_and_unsafe_outputs_are_not_charged(
    external_app: ExternalApp, fake: FakeReplicate, loopback_only: list[object], outcome: str, code: str
) -> None:
    fake.script.push("outcome", outcome)
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == code, task
        if outcome == "evil-url":
            assert "169.254.169.254" in task["errorMessage"]
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])


async def test_429_on_create_and_500_on_poll_are_retried(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    fake.script.push("create", "429")
    fake.script.push("get", "500")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
    assert len(fake.creates) == 2 and len(fake.predictions) == 1


async def test_a_new_worker_resumes_the_stored_prediction_instead_of_creating_another(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    fake.script.push("outcome", "hold")
    async with external_app(**_settings(fake), run_workers=False) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "resume me"})
        task_id = r.json()["data"]["id"]

        first = asyncio.create_task(TaskRunner(ctx, "worker-1").run(task_id))

        async def stored() -> bool:
            return (await task_row(client, task_id)).ai_task_id is not None

        await _until(stored)
        [pid] = fake.predictions
        assert (await task_row(client, task_id)).ai_task_id == pid
        # The worker dies: it stops without finishing and its lease is left to expire.
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        async with ctx.db.transaction() as session:
            await session.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(
                    status=TaskStatus.PROCESSING,
                    lease_owner="worker-1",
                    lease_expires_at=datetime.now(UTC) - timedelta(seconds=1),
                )
            )
        polls_before = fake.polls[pid]
        fake.predictions[pid]["_outcome"] = "ok"
        await TaskRunner(ctx, "worker-2").run(task_id)

        task = (await client.get(f"/api/tasks/{task_id}", headers=headers)).json()["data"]
        assert task["status"] == "completed", task
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    assert len(fake.creates) == 1
    assert fake.polls[pid] > polls_before


async def test_cancel_reaches_replicate(external_app: ExternalApp, fake: FakeReplicate) -> None:
    fake.script.push("outcome", "hold")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "never mind"})
        task_id = r.json()["data"]["id"]

        async def stored() -> bool:
            return (await task_row(client, task_id)).ai_task_id is not None

        await _until(stored)
        [pid] = fake.predictions
        r = await client.post(f"/api/tasks/{task_id}/cancel", headers=headers)
        assert r.status_code == 200, r.text

        async def canceled_remotely() -> bool:
            return any(q.path == f"/v1/predictions/{pid}/cancel" for q in fake.requests)

        await _until(canceled_remotely)
        assert fake.predictions[pid]["status"] == "canceled"
        assert fake.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])


def _signed(body: bytes, *, secret: str = SECRET, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": "v1,bogus " + sign(secret, "msg_1", stamp, body),
        "content-type": "application/json",
    }


async def _finished_hook(client: httpx.AsyncClient, fake: FakeReplicate, task_id: str) -> tuple[str, bytes]:
    """Once the task stored its prediction id: the body of the webhook saying it succeeded."""

    async def stored() -> bool:
        return (await task_row(client, task_id)).ai_task_id is not None

    await _until(stored)
    [pid] = fake.predictions
    finished = {
        "id": pid,
        "status": "succeeded",
        "output": [f"{fake.base}/files/{pid}_0.png"],
        "error": None,
        "logs": "100%|##########|",
    }
    return pid, json.dumps(finished).encode()


async def test_a_verified_webhook_finishes_the_prediction(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    fake.script.push("outcome", "hold")  # polling alone would never finish it
    settings = _settings(
        fake,
        replicate_webhook_url="https://darkroom.example/api/webhooks/replicate",
        replicate_webhook_secret=SECRET,
    )
    async with external_app(**settings) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "hooked"})
        task_id = r.json()["data"]["id"]

        pid, body = await _finished_hook(client, fake, task_id)
        hook = "/api/webhooks/replicate"
        # the id is stored before the run starts waiting on it: a webhook in between is recorded in
        # the database and taken from there (as in ..._reaches_the_worker_in_another_process);
        # this test is for the run that already waits (it failed once under a full test run)
        provider = client.app.state.ctx.registry.get("replicate")  # type: ignore[attr-defined]

        async def waiting() -> bool:
            return pid in provider._events

        await _until(waiting)

        bad = await client.post(hook, content=body, headers=_signed(body, secret="whsec_" + "A" * 44))
        assert bad.status_code == 401 and bad.json()["code"] == "invalid_webhook_signature"
        stale = await client.post(hook, content=body, headers=_signed(body, stamp=int(time.time()) - 3600))
        assert stale.status_code == 401 and stale.json()["code"] == "stale_webhook"
        tampered = await client.post(hook, content=body + b" ", headers=_signed(body))
        assert tampered.status_code == 401
        ok = await client.post(hook, content=body, headers=_signed(body))
        assert ok.status_code == 200 and ok.json()["data"] == {"delivered": True, "recorded": False}, ok.text

        task = await wait_for(client, headers, task_id)
        assert task["status"] == "completed", task
    [create] = fake.creates
    assert create.json["webhook"] == "https://darkroom.example/api/webhooks/replicate"
    assert create.json["webhook_events_filter"] == ["completed"]


async def test_webhook_endpoint_without_a_secret_is_not_found(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    async with external_app(**_settings(fake)) as client:
        r = await client.post("/api/webhooks/replicate", content=b"{}", headers=_signed(b"{}"))
        assert r.status_code == 404 and r.json()["code"] == "webhook_not_configured"


async def test_out_of_credit_402_is_unavailable_and_not_retried(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    fake.script.push("create", "402", "402", "402")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == "provider_unavailable", task
        assert "402" in task["errorMessage"] and "credit" in task["errorMessage"]
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])
    assert len(fake.creates) == 1


@pytest.mark.parametrize("step", ["500-after-create", "slow-after-create"])
async def test_a_create_whose_answer_is_lost_is_reconciled_not_repeated(
    external_app: ExternalApp, fake: FakeReplicate, step: str
) -> None:
    fake.script.push("create", step)
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "only once", "seed": 1})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        [pid] = fake.predictions  # one prediction: the create was not sent again
        assert task["aiTaskId"] == pid
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
    assert len(fake.creates) == 1
    listing = [r for r in fake.requests if r.method == "GET" and r.path == "/v1/predictions"]
    assert len(listing) == 1 and listing[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_a_5xx_on_create_with_nothing_created_fails_over_without_a_resend(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    fake.script.push("create", "500")
    async with external_app(**_settings(fake)) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "x"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "failed" and task["errorCode"] == "provider_unavailable", task
        assert "none was created" in task["errorMessage"]
        assert await ledger(client, headers) == (20, ["release", "reserve", "grant"])
    assert len(fake.creates) == 1 and fake.predictions == {}
    assert len([r for r in fake.requests if r.method == "GET" and r.path == "/v1/predictions"]) == 2


async def test_a_webhook_received_by_the_api_reaches_the_worker_in_another_process(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    """Scale-out: the API process (no workers) receives the webhook; the worker that waits on the
    prediction has its own context — engine, storage, provider instances — on the same database."""
    fake.script.push("outcome", "hold")  # polling Replicate alone would never finish it
    settings = _settings(
        fake,
        replicate_webhook_url="https://darkroom.example/api/webhooks/replicate",
        replicate_webhook_secret=SECRET,
    )
    async with external_app(**settings, run_workers=False) as client:
        api_ctx = client.app.state.ctx  # type: ignore[attr-defined]
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "far away"})
        task_id = r.json()["data"]["id"]

        worker_provider = ReplicateProvider(api_ctx.settings)
        worker_ctx = build_context(api_ctx.settings, [worker_provider])
        assert worker_ctx.db is not api_ctx.db
        try:
            run = asyncio.create_task(TaskRunner(worker_ctx, "worker-elsewhere").run(task_id))

            pid, body = await _finished_hook(client, fake, task_id)
            hook = await client.post("/api/webhooks/replicate", content=body, headers=_signed(body))
            assert hook.status_code == 200, hook.text
            assert hook.json()["data"] == {"delivered": False, "recorded": True}
            await asyncio.wait_for(run, 30)
        finally:
            await worker_provider.aclose()
            await worker_ctx.db.dispose()

        task = (await client.get(f"/api/tasks/{task_id}", headers=headers)).json()["data"]
        assert task["status"] == "completed" and task["aiTaskId"] == pid, task
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
        async with api_ctx.db.transaction(write=False) as session:  # taken, not left behind
            assert await session.scalar(select(func.count()).select_from(ProviderCallback)) == 0
    assert fake.predictions[pid]["status"] in ("starting", "processing")  # never done at Replicate
    assert len(fake.creates) == 1


async def test_with_webhooks_on_but_none_arriving_polling_still_finishes(
    external_app: ExternalApp, fake: FakeReplicate
) -> None:
    settings = _settings(
        fake,
        replicate_webhook_url="https://darkroom.example/api/webhooks/replicate",
        replicate_webhook_secret=SECRET,
    )
    async with external_app(**settings) as client:
        headers = await register(client)
        r = await submit(client, headers, "text_to_image", [], {"prompt": "lost hook"})
        task = await wait_for(client, headers, r.json()["data"]["id"])
        assert task["status"] == "completed", task
        assert await ledger(client, headers) == (16, ["capture", "reserve", "grant"])
