"""Replicate predictions.

Wire format (Replicate HTTP API reference, https://replicate.com/docs/reference/http):

* Auth ``Authorization: Bearer $REPLICATE_API_TOKEN``.
* Create: ``POST /v1/models/{owner}/{name}/predictions`` (official models, latest version) or
  ``POST /v1/predictions`` with ``"version"`` (``owner/name:version`` in REPLICATE_MODELS); body
  ``{"input": {…}, "webhook": url, "webhook_events_filter": ["completed"]}`` → 201 with the
  prediction ``{"id", "status": "starting", "urls": {"get", "cancel"}, "output": null, …}``.
* Poll ``GET urls.get`` until ``status`` is ``succeeded`` / ``failed`` / ``canceled``; ``output``
  is a URL or a list of URLs (files on replicate.delivery, deleted after an hour — copied into our
  storage at once through the SSRF-safe downloader), ``error`` says why it failed ("NSFW content
  detected" → content filtered), ``logs`` carries tqdm progress ("42%|…").
* Cancel: ``POST urls.cancel`` (``/v1/predictions/{id}/cancel``).
* A create is never repeated blindly (Replicate documents no idempotency key, so a repeated POST
  is a second, paid prediction): it is retried only when Replicate provably did not take it (the
  connection failed before sending, or 429). After a 5xx, a timeout or a connection lost with the
  request on the wire, we *reconcile*: ``GET /v1/predictions`` (newest first) is searched for a
  prediction of the same model/version with exactly our input created since we sent it; found,
  it is adopted (checkpointed and awaited); not found (twice, ``poll_interval`` apart), nothing
  was created and the provider fails as unavailable so the chain fails over — never a re-send.
* File inputs are sent as ``data:`` URIs (accepted by the API for files up to a few MB).
* Webhooks (optional, ``REPLICATE_WEBHOOK_URL``): Replicate POSTs the prediction to
  ``/api/webhooks/replicate``; the endpoint verifies the signature and hands the prediction to the
  run waiting in the same process, or else stores it in the database (``providers.callbacks``),
  where the run waiting in any other process (a Dramatiq worker) finds it: it checks there every
  ``poll_interval`` — one primary-key read — and, with webhooks on, asks Replicate itself only
  every :data:`WEBHOOK_POLL_EVERY` intervals. The run then finishes through the worker's usual
  conditional finish, so credits are captured once. Polling Replicate stays the fallback.

The prediction id is stored through ``request.checkpoint`` right after the create, before
waiting, so a restarted worker resumes the same prediction (``resume_id``) instead of paying again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from darkroom.config import Settings
from darkroom.providers.base import (
    ContentFiltered,
    InputImage,
    InvalidInput,
    ProgressCallback,
    ProviderError,
    ProviderRequest,
    ProviderResult,
    ProviderTimeout,
    ProviderUnavailable,
    TaskTypeSpec,
)
from darkroom.providers.callbacks import CallbackStore
from darkroom.providers.download import DownloadPolicy, SafeDownloader
from darkroom.providers.http import (
    ConcurrencyLimit,
    MaybeAccepted,
    ProviderHttp,
    RetryPolicy,
    error_for_status,
    json_body,
)
from darkroom.providers.limits import check_request
from darkroom.providers.outputs import output_image
from darkroom.providers.specs import (
    ASPECT_RATIOS,
    BACKGROUND_REMOVAL,
    BACKGROUND_REMOVAL_SPEC,
    CUSTOM,
    CUSTOM_SPEC,
    TEXT_TO_IMAGE,
    TEXT_TO_IMAGE_SPEC,
)

# Limits depend on the configured model; what we send does not: one input image (plus the mask).
log = logging.getLogger(__name__)

WEBHOOK_POLL_EVERY = 5

_SPECS = {
    TEXT_TO_IMAGE: TEXT_TO_IMAGE_SPEC,
    CUSTOM: dataclasses.replace(CUSTOM_SPEC, max_inputs=1),
    BACKGROUND_REMOVAL: dataclasses.replace(BACKGROUND_REMOVAL_SPEC, max_inputs=1),
}
_DONE = ("succeeded", "failed", "canceled", "aborted")
_FILTERED = re.compile(r"nsfw|sensitive|safety|content policy|flagged", re.I)
_PERCENT = re.compile(r"(\d{1,3})%\|")


def data_uri(img: InputImage) -> str:
    return f"data:{img.content_type};base64,{base64.b64encode(img.data).decode()}"


def _same(prediction: Mapping[str, Any], model: str, input_: Mapping[str, Any], since: datetime) -> bool:
    """Is ``prediction`` (from the list) the one a create of ``model`` with ``input_`` made?"""
    if ":" in model:
        if prediction.get("version") != model.split(":", 1)[1]:
            return False
    elif prediction.get("model") != model:
        return False
    try:
        created = datetime.fromisoformat(str(prediction.get("created_at")).replace("Z", "+00:00"))
    except ValueError:
        return False
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created >= since and prediction.get("input") == input_


def downloader_for(settings: Settings) -> SafeDownloader:
    trusted = Settings.host_list(settings.trusted_download_hosts)
    return SafeDownloader(
        DownloadPolicy(
            allowed_hosts=[*Settings.host_list(settings.replicate_download_hosts), *trusted],
            trusted_hosts=trusted,
            max_bytes=int(settings.download_max_mb * 1024 * 1024),
            timeout=settings.download_timeout_seconds,
            max_redirects=settings.download_max_redirects,
        )
    )


class ReplicateProvider:
    name = "replicate"

    def __init__(self, settings: Settings, downloader: SafeDownloader | None = None) -> None:
        if not settings.replicate_api_token:
            raise ValueError("REPLICATE_API_TOKEN is required for the replicate provider")
        self.base_url = settings.replicate_base_url.rstrip("/")
        self.models = {k: v for k, v in settings.replicate_models.items() if k in _SPECS and v}
        self.webhook_url = settings.replicate_webhook_url
        self.policy = RetryPolicy.from_settings(settings)
        self.http = ProviderHttp(
            self.name,
            self.base_url,
            self.policy,
            headers={"Authorization": f"Bearer {settings.replicate_api_token}"},
        )
        self.downloader = downloader or downloader_for(settings)
        self.limit = ConcurrencyLimit(settings.replicate_concurrency)
        self._pushed: dict[str, dict[str, Any]] = {}
        self._events: dict[str, asyncio.Event] = {}
        self.callbacks: CallbackStore | None = None

    def bind_callbacks(self, store: CallbackStore) -> None:
        """Where webhooks received by any process of this deployment are stored."""
        self.callbacks = store

    def capabilities(self) -> Mapping[str, TaskTypeSpec]:
        return MappingProxyType({t: _SPECS[t] for t in self.models})

    # -- run ----------------------------------------------------------------------------------

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        model = self.models.get(request.task_type)
        if model is None:
            raise InvalidInput(f"replicate has no model configured for {request.task_type}.")
        check_request(_SPECS.get(request.task_type), request, self.name)
        async with self.limit:
            if request.resume_id is not None:
                prediction = await self._get(request.resume_id, None)
            else:
                prediction = await self._create(model, self._input(request))
                await request.checkpoint(prediction["id"])
            await progress(10)
            prediction = await self._wait(prediction, progress)
            outputs = await self._outputs(prediction)
            await progress(100)
            return ProviderResult(outputs, request_id=prediction["id"], model=model)

    def _input(self, request: ProviderRequest) -> dict[str, Any]:
        p = request.parameters
        prompt = str(p.get("prompt") or request.prompt or "")
        if request.task_type == TEXT_TO_IMAGE:
            body: dict[str, Any] = {
                "prompt": prompt,
                "num_outputs": int(p.get("count") or 1),
                "aspect_ratio": ASPECT_RATIOS.get(str(p.get("size")), "1:1"),
                "output_format": "png",
            }
            if p.get("seed") is not None:
                body["seed"] = int(p["seed"])
            return body
        if not request.inputs:
            raise InvalidInput("This task needs an input image.")
        if request.task_type == BACKGROUND_REMOVAL:
            return {"image": data_uri(request.inputs[0])}
        body = {"prompt": prompt, "image": data_uri(request.inputs[0])}
        if request.mask is not None:
            body["mask"] = data_uri(request.mask)
        return body

    async def _create(self, model: str, input_: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"input": input_}
        if self.webhook_url:
            body["webhook"] = self.webhook_url
            body["webhook_events_filter"] = ["completed"]
        if ":" in model:
            path = "/v1/predictions"
            body["version"] = model.split(":", 1)[1]
        else:
            path = f"/v1/models/{model}/predictions"
        sent_at = datetime.now(UTC)
        try:
            response = await self.http.send("POST", path, json=body, replay=False)
        except MaybeAccepted as exc:
            found = await self._reconcile(model, input_, sent_at)
            if found is None:
                raise ProviderUnavailable(
                    f"{exc.message} Replicate lists no prediction of ours, so none was created; "
                    "not asking again."
                ) from None
            log.warning("replicate create failed after sending; adopted prediction %s", found["id"])
            return found
        return self._prediction(response)

    async def _reconcile(
        self, model: str, input_: dict[str, Any], sent_at: datetime
    ) -> dict[str, Any] | None:
        """The prediction a create we could not read the answer of made, if Replicate has one."""
        since = sent_at - timedelta(minutes=2)  # their clock may be behind ours
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(self.policy.poll_interval)
            try:
                response = await self.http.send("GET", "/v1/predictions", idempotent=True)
            except ProviderError:
                return None
            if response.status_code >= 400:
                return None
            results = json_body(self.name, response).get("results")
            for prediction in results if isinstance(results, list) else []:
                if isinstance(prediction, dict) and _same(prediction, model, input_, since):
                    return self._checked(prediction)
        return None

    def _prediction(self, response: Any) -> dict[str, Any]:
        if response.status_code >= 400:
            raise error_for_status(self.name, response)
        return self._checked(json_body(self.name, response))

    def _checked(self, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body.get("id"), str) or not body["id"]:
            raise ProviderError("replicate sent a malformed prediction (no id).")
        return body

    def _get_url(self, prediction_id: str, prediction: dict[str, Any] | None) -> str:
        """``urls.get`` when it points at the configured API (our token never goes elsewhere)."""
        urls = (prediction or {}).get("urls") or {}
        url = urls.get("get") if isinstance(urls, dict) else None
        if isinstance(url, str) and url.startswith(self.base_url + "/"):
            return url
        return f"{self.base_url}/v1/predictions/{prediction_id}"

    async def _get(self, prediction_id: str, prediction: dict[str, Any] | None) -> dict[str, Any]:
        response = await self.http.send("GET", self._get_url(prediction_id, prediction), idempotent=True)
        return self._prediction(response)

    async def _wait(self, prediction: dict[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        pid = prediction["id"]
        event = self._events.setdefault(pid, asyncio.Event())
        deadline = time.monotonic() + self.policy.deadline
        ticks = 0
        try:
            while prediction.get("status") not in _DONE:
                with_progress = _PERCENT.findall(str(prediction.get("logs") or ""))
                if with_progress:
                    await progress(10 + 0.8 * min(100, int(with_progress[-1])))
                if time.monotonic() > deadline:
                    raise ProviderTimeout(
                        f"Replicate prediction {pid} did not finish within {self.policy.deadline:g} s."
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.policy.poll_interval)
                pushed = self._pushed.pop(pid, None)
                event.clear()
                if pushed is None:
                    pushed = await self._stored(pid)
                ticks += 1
                if pushed is not None:
                    prediction = {**prediction, **pushed}
                elif self.callbacks is None or not self.webhook_url or ticks % WEBHOOK_POLL_EVERY == 0:
                    prediction = await self._get(pid, prediction)
        finally:
            self._events.pop(pid, None)
            self._pushed.pop(pid, None)
        status = prediction.get("status")
        if status == "succeeded":
            return prediction
        error = str(prediction.get("error") or "")
        if status == "failed" and _FILTERED.search(error):
            raise ContentFiltered(f"Replicate's safety checker refused the request: {error[:200]}")
        if status == "failed":
            raise ProviderError(f"The Replicate prediction failed: {error[:300] or 'no reason given'}")
        raise ProviderError(f"The Replicate prediction was {status}.")

    async def _stored(self, pid: str) -> dict[str, Any] | None:
        """A webhook for ``pid`` that another process received (None when there is none)."""
        if self.callbacks is None or not self.webhook_url:  # webhooks off: nothing to read
            return None
        try:
            return await self.callbacks.take(pid)
        except Exception:  # the database is away for a moment: polling Replicate still works
            log.warning("could not read stored webhooks", exc_info=True)
            return None

    async def _outputs(self, prediction: dict[str, Any]) -> list[Any]:
        output = prediction.get("output")
        urls = [output] if isinstance(output, str) else output
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ProviderError("replicate sent a malformed prediction (no output URLs).")
        return [await output_image(await self.downloader.fetch(u)) for u in urls]

    # -- cancel and webhooks --------------------------------------------------------------------

    async def cancel(self, request_id: str) -> None:
        response = await self.http.send("POST", f"/v1/predictions/{request_id}/cancel")
        if response.status_code >= 400:
            raise error_for_status(self.name, response)

    def deliver(self, prediction: Mapping[str, Any]) -> bool:
        """A verified webhook: wake the run waiting for this prediction. True when one waits."""
        pid = prediction.get("id")
        if not isinstance(pid, str) or pid not in self._events:
            return False
        self._pushed[pid] = dict(prediction)
        self._events[pid].set()
        return True

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.downloader.aclose()
