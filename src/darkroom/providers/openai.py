"""OpenAI Images with the GPT image models (gpt-image-1 family).

Wire format (OpenAI API reference, "Images": https://platform.openai.com/docs/api-reference/images):

* ``POST {base}/images/generations`` — JSON ``{model, prompt, n, size, quality}`` → ``text_to_image``.
* ``POST {base}/images/edits`` — multipart/form-data: ``model``, ``prompt``, ``n``, ``size``,
  ``quality``, one ``image[]`` part per input image, optional ``mask`` (PNG, transparent where the
  image may change), ``background=transparent`` → ``custom`` and cloud ``background_removal``.
* Auth: ``Authorization: Bearer $OPENAI_API_KEY``. Answer ``{"created": …, "data": [{"b64_json":
  …}], "usage": …}`` (GPT image models always answer base64). The request id is the
  ``x-request-id`` response header.
* Errors ``{"error": {"message", "type", "code"}}``: ``moderation_blocked`` /
  ``content_policy_violation`` → content filtered; 429 → rate limited (``Retry-After``), except
  429 ``insufficient_quota`` / ``billing_hard_limit_reached`` (the account is out of money or
  past its spending limit): not transient, so not retried → provider unavailable at once, and
  the chain fails over.

DALL·E 2/3 were removed from the API; Settings refuses ``OPENAI_MODEL=dall-e-*`` at start-up.
The calls are synchronous (one HTTP request), so there is nothing to resume after a crash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx

from darkroom.config import Settings
from darkroom.providers.base import (
    ContentFiltered,
    InvalidInput,
    ProgressCallback,
    ProviderError,
    ProviderRequest,
    ProviderResult,
    ProviderUnavailable,
    TaskTypeSpec,
)
from darkroom.providers.http import ConcurrencyLimit, ProviderHttp, RetryPolicy, error_for_status, json_body
from darkroom.providers.limits import check_request
from darkroom.providers.outputs import decode_b64, output_image
from darkroom.providers.specs import (
    BACKGROUND_REMOVAL,
    BACKGROUND_REMOVAL_SPEC,
    CUSTOM,
    CUSTOM_SPEC,
    TEXT_TO_IMAGE,
    TEXT_TO_IMAGE_SPEC,
)

DEFAULT_MODEL = "gpt-image-1"
_FILTER_CODES = {"moderation_blocked", "content_policy_violation"}
_BILLING_CODES = {"insufficient_quota", "billing_hard_limit_reached"}
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# Image inputs for GPT image edits (OpenAI API reference, images/edits): up to 16 images, PNG,
# JPEG or WebP, each under 50 MB; the mask is a PNG of the first image's size. A cut-out sends
# one image per request (all inputs of one edit become one picture).
_EDIT_BYTES = 50 * 1024 * 1024 - 1
_CAPABILITIES = MappingProxyType(
    {
        TEXT_TO_IMAGE: TEXT_TO_IMAGE_SPEC,
        CUSTOM: dataclasses.replace(CUSTOM_SPEC, max_inputs=16, max_input_bytes=_EDIT_BYTES),
        BACKGROUND_REMOVAL: dataclasses.replace(
            BACKGROUND_REMOVAL_SPEC, max_inputs=1, max_input_bytes=_EDIT_BYTES
        ),
    }
)
_CUTOUT_PROMPT = (
    "Remove the background completely. Keep the main subject exactly as it is, with clean edges, "
    "on a fully transparent background."
)


class OpenAIProvider:
    name = "openai"

    def __init__(self, settings: Settings) -> None:
        if not settings.openai_api_key:
            raise ValueError("OPENAI_API_KEY is required for the openai provider")
        self.model = settings.openai_model or DEFAULT_MODEL
        self.quality = settings.openai_quality
        self.http = ProviderHttp(
            self.name,
            settings.openai_base_url,
            RetryPolicy.from_settings(settings),
            headers={"Authorization": f"Bearer {settings.openai_api_key}"},
            refuse=_billing_error,
        )
        self.limit = ConcurrencyLimit(settings.openai_concurrency)

    def capabilities(self) -> Mapping[str, TaskTypeSpec]:
        return _CAPABILITIES

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        check_request(_CAPABILITIES.get(request.task_type), request, self.name)
        async with self.limit:
            await progress(5)
            if request.task_type == TEXT_TO_IMAGE:
                response = await self._generate(request)
            elif request.task_type in (CUSTOM, BACKGROUND_REMOVAL):
                response = await self._edit(request)
            else:
                raise InvalidInput(f"openai does not serve {request.task_type}.")
            await progress(80)
            outputs = [
                await output_image(decode_b64(self.name, item.get("b64_json")))
                for item in self._data(response)
            ]
            await progress(100)
            return ProviderResult(
                outputs=outputs, request_id=response.headers.get("x-request-id"), model=self.model
            )

    async def _generate(self, request: ProviderRequest) -> httpx.Response:
        p = request.parameters
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": p.get("prompt") or request.prompt,
            "n": int(p.get("count") or 1),
            "size": p.get("size") or "1024x1024",
            "quality": self.quality,
        }
        return await self.http.send("POST", "/images/generations", json=body)

    async def _edit(self, request: ProviderRequest) -> httpx.Response:
        p = request.parameters
        if not request.inputs:
            raise InvalidInput("An edit needs at least one input image.")
        data: dict[str, str] = {"model": self.model, "quality": self.quality}
        if request.task_type == BACKGROUND_REMOVAL:
            data.update(prompt=_CUTOUT_PROMPT, n="1", size="auto", output_format="png")
            if p.get("background", "transparent") == "transparent":
                data["background"] = "transparent"
        else:
            data.update(
                prompt=str(p.get("prompt") or request.prompt or ""),
                n=str(int(p.get("count") or 1)),
                size=str(p.get("size") or "1024x1024"),
            )
        files: list[tuple[str, tuple[str, bytes, str]]] = [
            ("image[]", (f"image{i + 1}.{_EXT.get(img.content_type, 'png')}", img.data, img.content_type))
            for i, img in enumerate(request.inputs)
        ]
        if request.mask is not None:
            files.append(("mask", ("mask.png", request.mask.data, request.mask.content_type)))
        return await self.http.send("POST", "/images/edits", data=data, files=files)

    def _data(self, response: httpx.Response) -> list[dict[str, Any]]:
        if response.status_code >= 400:
            self._raise(response)
        body = json_body(self.name, response)
        items = body.get("data")
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise ProviderError("openai sent a malformed answer (no data).")
        return items

    def _raise(self, response: httpx.Response) -> None:
        error = _error_of(response)
        code = error.get("code")
        if code in _FILTER_CODES:
            raise ContentFiltered(f"OpenAI refused the request: {error.get('message') or code}")
        raise error_for_status(self.name, response)

    async def aclose(self) -> None:
        await self.http.aclose()


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _billing_error(response: httpx.Response) -> ProviderError | None:
    """429 insufficient_quota / billing_hard_limit_reached: no retry will help, fail over now."""
    error = _error_of(response)
    code = error.get("code") or error.get("type")
    if code not in _BILLING_CODES:
        return None
    return ProviderUnavailable(
        f"OpenAI refused the request: the API account has no quota left ({code}). The operator "
        f"must add credit or raise the spending limit. {str(error.get('message') or '')[:200]}".strip()
    )
