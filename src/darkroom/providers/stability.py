"""Stability AI: the v2beta Stable Image endpoints and the v1 SDXL text-to-image request.

Wire format (Stability AI REST API reference, https://platform.stability.ai/docs/api-reference):

* Auth ``Authorization: Bearer $STABILITY_API_KEY``; v2beta requests are multipart/form-data
  (also when no file is sent) with ``Accept: application/json``, answering ``{"image": <base64>,
  "finish_reason": "SUCCESS" | "CONTENT_FILTERED", "seed": …}``.
* ``text_to_image``: ``POST /v2beta/stable-image/generate/{core|ultra|sd3}`` (``prompt``,
  ``negative_prompt``, ``aspect_ratio``, ``seed``, ``output_format``) — one image per request —
  or, with ``STABILITY_ENGINE=sdxl-v1``, the seed design's
  ``POST /v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image`` (JSON ``text_prompts``,
  ``width``/``height``, ``samples`` …) answering ``{"artifacts": [{"base64", "seed",
  "finishReason": "SUCCESS" | "CONTENT_FILTERED" | "ERROR"}]}``.
* ``background_removal``: ``POST /v2beta/stable-image/edit/remove-background`` (``image``).
* ``custom`` with a mask: ``POST /v2beta/stable-image/edit/inpaint`` (``image``, ``mask``,
  ``prompt``); without a mask: ``POST /v2beta/stable-image/edit/replace-background-and-relight``
  (``subject_image``, ``background_prompt``), which is asynchronous: it answers ``{"id": …}`` and
  the result is polled at ``GET /v2beta/results/{id}`` (202 ``{"status": "in-progress"}`` while
  running, 200 with the image when done, 404 when unknown or expired). Any v2beta answer that
  carries an ``id`` and no image is treated the same way.
* Moderation: 403 ``{"name": "content_moderation", "errors": […]}`` or
  ``finish_reason: CONTENT_FILTERED`` → content filtered. 400 → invalid input; 429 → rate limited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx

from darkroom.config import Settings
from darkroom.providers.base import (
    ContentFiltered,
    InvalidInput,
    OutputImage,
    ProgressCallback,
    ProviderError,
    ProviderRequest,
    ProviderResult,
    ProviderTimeout,
    TaskTypeSpec,
)
from darkroom.providers.http import ConcurrencyLimit, ProviderHttp, RetryPolicy, error_for_status, json_body
from darkroom.providers.outputs import decode_b64, output_image
from darkroom.providers.specs import (
    ASPECT_RATIOS,
    BACKGROUND_REMOVAL,
    BACKGROUND_REMOVAL_SPEC,
    CUSTOM,
    CUSTOM_SPEC,
    TEXT_TO_IMAGE,
    TEXT_TO_IMAGE_SPEC,
    size_of,
)

SDXL_V1_PATH = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
# SDXL v1 accepts only its own sizes; the nearest to each of ours.
_SDXL_SIZE = {"1024x1024": (1024, 1024), "1536x1024": (1216, 832), "1024x1536": (832, 1216)}
_CAPABILITIES = MappingProxyType(
    {TEXT_TO_IMAGE: TEXT_TO_IMAGE_SPEC, CUSTOM: CUSTOM_SPEC, BACKGROUND_REMOVAL: BACKGROUND_REMOVAL_SPEC}
)
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _file(field: str, img: Any) -> tuple[str, tuple[str, bytes, str]]:
    return field, (f"{field}.{_EXT.get(img.content_type, 'png')}", img.data, img.content_type)


class StabilityProvider:
    name = "stability"

    def __init__(self, settings: Settings) -> None:
        if not settings.stability_api_key:
            raise ValueError("STABILITY_API_KEY is required for the stability provider")
        self.engine = settings.stability_engine
        self.policy = RetryPolicy.from_settings(settings)
        self.http = ProviderHttp(
            self.name,
            settings.stability_base_url,
            self.policy,
            headers={"Authorization": f"Bearer {settings.stability_api_key}", "Accept": "application/json"},
        )
        self.limit = ConcurrencyLimit(settings.stability_concurrency)

    def capabilities(self) -> Mapping[str, TaskTypeSpec]:
        return _CAPABILITIES

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        async with self.limit:
            if request.resume_id is not None:  # a worker died while this generation ran
                image = await self._poll(request.resume_id, progress)
                return ProviderResult([image], request_id=request.resume_id, model=self._model(request))
            await progress(5)
            if request.task_type == TEXT_TO_IMAGE and self.engine == "sdxl-v1":
                outputs = await self._sdxl_v1(request)
                return ProviderResult(outputs, model=self._model(request))
            outputs = []
            forms = self._forms(request)
            for form, files in forms:
                outputs.append(await self._v2beta(self._path(request), form, files, request, progress))
                await progress(10 + 80 * len(outputs) / len(forms))
            return ProviderResult(outputs, model=self._model(request))

    def _model(self, request: ProviderRequest) -> str:
        if request.task_type == TEXT_TO_IMAGE:
            return (
                "stable-diffusion-xl-1024-v1-0" if self.engine == "sdxl-v1" else f"stable-image-{self.engine}"
            )
        return self._path(request).rsplit("/", 1)[-1]

    def _path(self, request: ProviderRequest) -> str:
        if request.task_type == TEXT_TO_IMAGE:
            return f"/v2beta/stable-image/generate/{self.engine}"
        if request.task_type == BACKGROUND_REMOVAL:
            return "/v2beta/stable-image/edit/remove-background"
        if request.task_type == CUSTOM:
            if request.mask is not None:
                return "/v2beta/stable-image/edit/inpaint"
            return "/v2beta/stable-image/edit/replace-background-and-relight"
        raise InvalidInput(f"stability does not serve {request.task_type}.")

    def _forms(self, request: ProviderRequest) -> list[tuple[dict[str, str], list[Any]]]:
        """One (form fields, files) per request to send: one per output image."""
        p = request.parameters
        prompt = str(p.get("prompt") or request.prompt or "")
        seed = p.get("seed")
        if request.task_type == TEXT_TO_IMAGE:
            forms: list[tuple[dict[str, str], list[Any]]] = []
            for i in range(int(p.get("count") or 1)):
                form = {"prompt": prompt, "aspect_ratio": ASPECT_RATIOS[str(p.get("size") or "1024x1024")]}
                form["output_format"] = "png"
                if p.get("negative_prompt"):
                    form["negative_prompt"] = str(p["negative_prompt"])
                if seed is not None:
                    form["seed"] = str(int(seed) + i)
                forms.append((form, []))
            return forms
        if not request.inputs:
            raise InvalidInput("This task needs an input image.")
        if request.task_type == BACKGROUND_REMOVAL:
            return [({"output_format": "png"}, [_file("image", img)]) for img in request.inputs]
        form = {"output_format": "png"}
        if seed is not None:
            form["seed"] = str(int(seed))
        if request.mask is not None:
            files = [_file("image", request.inputs[0]), _file("mask", request.mask)]
            return [({**form, "prompt": prompt}, files)]
        return [({**form, "background_prompt": prompt}, [_file("subject_image", request.inputs[0])])]

    async def _v2beta(
        self,
        path: str,
        form: dict[str, str],
        files: list[Any],
        request: ProviderRequest,
        progress: ProgressCallback,
    ) -> OutputImage:
        # multipart/form-data is required even without a file: send an empty 'none' part then.
        response = await self.http.send("POST", path, data=form, files=files or {"none": ""})
        body = self._body(response)
        if "image" not in body and isinstance(body.get("id"), str):
            await request.checkpoint(body["id"])
            return await self._poll(body["id"], progress)
        return await self._image(body)

    async def _poll(self, generation_id: str, progress: ProgressCallback) -> OutputImage:
        deadline = time.monotonic() + self.policy.deadline
        step = 0
        while True:
            response = await self.http.send("GET", f"/v2beta/results/{generation_id}", idempotent=True)
            if response.status_code == 202:
                step += 1
                await progress(min(90.0, 10 + 5 * step))
                if time.monotonic() > deadline:
                    raise ProviderTimeout(
                        f"Stability did not finish generation {generation_id} within "
                        f"{self.policy.deadline:g} s."
                    )
                await asyncio.sleep(self.policy.poll_interval)
                continue
            return await self._image(self._body(response))

    def _body(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                name = response.json().get("name")
            except (ValueError, AttributeError):
                name = None
            if response.status_code == 403 and name == "content_moderation":
                raise ContentFiltered("Stability's content moderation refused the request.")
            raise error_for_status(self.name, response)
        return json_body(self.name, response)

    async def _image(self, body: dict[str, Any]) -> OutputImage:
        reason = body.get("finish_reason")
        if reason == "CONTENT_FILTERED":
            raise ContentFiltered("Stability's content filter blocked the result.")
        if reason not in (None, "SUCCESS"):
            raise ProviderError(f"Stability could not finish the image ({reason}).")
        return await output_image(decode_b64(self.name, body.get("image")))

    async def _sdxl_v1(self, request: ProviderRequest) -> list[OutputImage]:
        p = request.parameters
        width, height = _SDXL_SIZE.get(str(p.get("size")), size_of(p.get("size")))
        prompts: list[dict[str, Any]] = [{"text": str(p.get("prompt") or request.prompt or ""), "weight": 1}]
        if p.get("negative_prompt"):
            prompts.append({"text": str(p["negative_prompt"]), "weight": -1})
        body: dict[str, Any] = {
            "text_prompts": prompts,
            "cfg_scale": 7,
            "width": width,
            "height": height,
            "samples": int(p.get("count") or 1),
            "steps": 30,
        }
        if p.get("seed") is not None:
            body["seed"] = int(p["seed"])
        answer = self._body(await self.http.send("POST", SDXL_V1_PATH, json=body))
        artifacts = answer.get("artifacts")
        if not isinstance(artifacts, list) or not artifacts:
            raise ProviderError("stability sent a malformed answer (no artifacts).")
        outputs = []
        for artifact in artifacts:
            if not isinstance(artifact, dict):
                raise ProviderError("stability sent a malformed answer (bad artifact).")
            reason = artifact.get("finishReason")
            if reason == "CONTENT_FILTERED":
                raise ContentFiltered("Stability's content filter blocked the result.")
            if reason not in (None, "SUCCESS"):
                raise ProviderError(f"Stability could not finish the image ({reason}).")
            outputs.append(await output_image(decode_b64(self.name, artifact.get("base64"))))
        return outputs

    async def aclose(self) -> None:
        await self.http.aclose()
