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
  ``prompt``); without a mask, a real image-to-image edit of the whole picture:
  ``POST /v2beta/stable-image/generate/sd3`` (``mode=image-to-image``, ``image``, ``prompt``,
  ``strength`` — how far the result may move from the image, 0..1 — ``output_format``).
* ``style_transfer`` (the built-in provider's parameters, so a task validated for one serves on
  the other): with a style image (input 2) ``POST /v2beta/stable-image/control/style-transfer``
  (``init_image``, ``style_image``, ``style_strength`` = ``strength``, ``output_format``); with a
  named style ``POST /v2beta/stable-image/control/structure`` (``image``, a ``prompt`` naming the
  style, ``control_strength`` — how closely the photo's structure is kept). ``preserve_color`` has
  no Stability counterpart and is ignored.
* Asynchronous endpoints answer ``{"id": …}``; the result is polled at ``GET /v2beta/results/{id}``
  (202 ``{"status": "in-progress"}`` while running, 200 with the image when done, 404 when unknown
  or expired). None of the endpoints above is asynchronous today; any v2beta answer that carries
  an ``id`` and no image is handled that way.
* An answer may also be the image bytes themselves (``Content-Type: image/*``, as with
  ``Accept: image/*``), with the outcome in the ``finish-reason`` header.
* Moderation: 403 ``{"name": "content_moderation", "errors": […]}`` or
  ``finish_reason: CONTENT_FILTERED`` → content filtered. 400 → invalid input; 402 (no credit
  left) → provider unavailable, at once; 429 → rate limited.
* Input limits (API reference, per endpoint): JPEG/PNG/WebP, each side at least 64 px, at most
  9,437,184 pixels (remove-background: 4,194,304), aspect ratio within 1:2.5 … 2.5:1, requests
  up to 10 MiB. They are in :data:`CAPABILITIES`, checked at submit (``providers.limits``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

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
from darkroom.providers.limits import check_request
from darkroom.providers.local.specs import CAPABILITIES as LOCAL_CAPABILITIES
from darkroom.providers.local.specs import STYLE_TRANSFER
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
_MAX_PIXELS = 9_437_184
_LIMITS: dict[str, Any] = {
    "max_input_bytes": 10 * 1024 * 1024,
    "max_pixels": _MAX_PIXELS,
    "min_side": 64,
    "max_aspect": 2.5,
}
CAPABILITIES: Final = MappingProxyType(
    {
        TEXT_TO_IMAGE: TEXT_TO_IMAGE_SPEC,
        # only the first image is edited (plus the mask): one input
        CUSTOM: dataclasses.replace(CUSTOM_SPEC, max_inputs=1, **_LIMITS),
        BACKGROUND_REMOVAL: dataclasses.replace(
            BACKGROUND_REMOVAL_SPEC, **{**_LIMITS, "max_pixels": 4_194_304}
        ),
        STYLE_TRANSFER: dataclasses.replace(
            LOCAL_CAPABILITIES[STYLE_TRANSFER],
            description=(
                "Repaint a photo in a named style (Stability control/structure with a prompt naming "
                "it) or in the style of a second image (control/style-transfer)."
            ),
            **_LIMITS,
        ),
    }
)
STYLE_TRANSFER_PATH: Final = "/v2beta/stable-image/control/style-transfer"
STRUCTURE_PATH: Final = "/v2beta/stable-image/control/structure"
IMAGE_TO_IMAGE_PATH: Final = "/v2beta/stable-image/generate/sd3"
# How far an unmasked edit may move from the image (Stability's default is 0.5 … the prompt
# should clearly show, the photo should stay recognisable).
EDIT_STRENGTH: Final = 0.7
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _file(field: str, img: Any) -> tuple[str, tuple[str, bytes, str]]:
    return field, (f"{field}.{_EXT.get(img.content_type, 'png')}", img.data, img.content_type)


def _style_form(request: ProviderRequest) -> tuple[dict[str, str], list[Any]]:
    p = request.parameters
    strength = float(p.get("strength", 1.0) if p.get("strength") is not None else 1.0)
    photo = request.inputs[0]
    if len(request.inputs) > 1:  # in the style of the second image
        form = {"output_format": "png", "style_strength": f"{strength:g}"}
        return form, [_file("init_image", photo), _file("style_image", request.inputs[1])]
    style = str(p.get("style") or "").replace("_", " ")
    form = {
        "output_format": "png",
        "prompt": f"The same picture repainted as {style} artwork, same composition and subjects.",
        # strength 1 (the full effect) lets the style move the picture most; 0 keeps it closest
        "control_strength": f"{0.95 - 0.35 * strength:.2f}",
    }
    return form, [_file("image", photo)]


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
        return CAPABILITIES

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        check_request(CAPABILITIES.get(request.task_type), request, self.name)
        async with self.limit:
            if request.resume_id is not None:  # a worker died while this generation ran
                image = await self._poll(request.resume_id, progress)
                return ProviderResult([image], request_id=request.resume_id, model=self._model(request))
            await progress(5)
            if request.task_type == TEXT_TO_IMAGE and self.engine == "sdxl-v1":
                outputs = await self._sdxl_v1(request)
                return ProviderResult(outputs, model=self._model(request))
            outputs = []
            path = self._path(request)
            forms = self._forms(request)
            for form, files in forms:
                outputs.append(await self._v2beta(path, form, files, request, progress))
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
            return IMAGE_TO_IMAGE_PATH
        if request.task_type == STYLE_TRANSFER:
            return STYLE_TRANSFER_PATH if len(request.inputs) > 1 else STRUCTURE_PATH
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
        if request.task_type == STYLE_TRANSFER:
            return [_style_form(request)]
        form = {"output_format": "png"}
        if seed is not None:
            form["seed"] = str(int(seed))
        if request.mask is not None:
            files = [_file("image", request.inputs[0]), _file("mask", request.mask)]
            return [({**form, "prompt": prompt}, files)]
        edit = {**form, "mode": "image-to-image", "prompt": prompt, "strength": f"{EDIT_STRENGTH:g}"}
        return [(edit, [_file("image", request.inputs[0])])]

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
        if response.status_code < 400 and response.headers.get("content-type", "").startswith("image/"):
            return await self._image_bytes(response)
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

    async def _image_bytes(self, response: httpx.Response) -> OutputImage:
        """An ``Accept: image/*`` style answer: the bytes, the outcome in ``finish-reason``."""
        return await self._image({"finish_reason": response.headers.get("finish-reason")}, response.content)

    async def _image(self, body: dict[str, Any], raw: bytes | None = None) -> OutputImage:
        reason = body.get("finish_reason")
        if reason == "CONTENT_FILTERED":
            raise ContentFiltered("Stability's content filter blocked the result.")
        if reason not in (None, "SUCCESS"):
            raise ProviderError(f"Stability could not finish the image ({reason}).")
        return await output_image(raw if raw is not None else decode_b64(self.name, body.get("image")))

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
