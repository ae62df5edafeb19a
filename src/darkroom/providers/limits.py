"""Per-provider input limits, checked at submit and again before a provider runs.

Every provider states its documented limits in its :class:`TaskTypeSpec` (input count, formats,
bytes, pixels, shortest side, aspect ratio, mask support). At submit, :func:`choose_route` walks
the task type's routed chain and takes the first provider that can take the uploads; providers
that cannot are skipped. When none can, the submit is refused with 422 ``unsupported_input`` and
a message naming the limit — before anything is stored or any credit reserved.

A worker falling over to the next provider of the chain checks again (:func:`check_request`): a
provider that cannot take the inputs is skipped as unavailable, so the next one serves the task.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from darkroom.errors import Unprocessable
from darkroom.providers.base import ProviderRequest, ProviderUnavailable, TaskTypeSpec
from darkroom.providers.registry import Route

_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP"}


@dataclass(frozen=True)
class Facts:
    """What we know about one uploaded image (sniffed and decoded at upload)."""

    content_type: str
    size: int
    width: int
    height: int


def refusal(spec: TaskTypeSpec, images: Sequence[Facts], mask: Facts | None) -> str | None:
    """Why a provider with ``spec`` cannot take these inputs (naming the limit), else None."""
    if mask is not None and not spec.supports_mask:
        return "takes no mask"
    if len(images) > spec.max_inputs:
        return f"takes at most {spec.max_inputs} input image(s), {len(images)} given"
    if len(images) < spec.min_inputs:
        return f"needs at least {spec.min_inputs} input image(s)"
    for n, img in enumerate([*images, *([mask] if mask is not None else [])], start=1):
        label = "the mask" if mask is not None and n == len(images) + 1 else f"image {n}"
        if img.content_type not in spec.input_formats:
            kinds = ", ".join(_FORMAT.get(f, f) for f in spec.input_formats)
            return f"takes {kinds} only ({label} is {_FORMAT.get(img.content_type, img.content_type)})"
        if spec.max_input_bytes is not None and img.size > spec.max_input_bytes:
            return f"takes files up to {spec.max_input_bytes / 2**20:g} MiB ({label} has {img.size} bytes)"
        if spec.max_pixels is not None and img.width * img.height > spec.max_pixels:
            return (
                f"takes images up to {spec.max_pixels:,} pixels "
                f"({label} is {img.width}x{img.height} = {img.width * img.height:,})"
            )
        if spec.min_side is not None and min(img.width, img.height) < spec.min_side:
            return f"needs at least {spec.min_side} px on each side ({label} is {img.width}x{img.height})"
        if spec.max_aspect is not None:
            ratio = max(img.width, img.height) / max(1, min(img.width, img.height))
            if ratio > spec.max_aspect:
                return (
                    f"takes aspect ratios up to {spec.max_aspect:g}:1 "
                    f"({label} is {img.width}x{img.height}, {ratio:.2f}:1)"
                )
    return None


def split_mask(facts: Sequence[Facts], params: Mapping[str, Any]) -> tuple[list[Facts], Facts | None]:
    """With ``mask: true`` the last upload is the mask (as the worker splits it)."""
    if params.get("mask") is True and len(facts) > 1:
        return list(facts[:-1]), facts[-1]
    return list(facts), None


def choose_route(chain: Sequence[Route], facts: Sequence[Facts], params: Mapping[str, Any]) -> Route:
    """The first provider of the chain that can take the uploads; 422 ``unsupported_input`` if none."""
    images, mask = split_mask(facts, params)
    reasons = []
    for route in chain:
        reason = refusal(route.spec, images, mask)
        if reason is None:
            return route
        reasons.append(f"{route.provider.name} {reason}")
    raise Unprocessable(
        "No configured provider can take these inputs: " + "; ".join(reasons) + ".",
        code="unsupported_input",
    )


def _facts(data: bytes, content_type: str) -> Facts:
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
    except Exception:  # our own stored input; let the provider refuse it if it is broken
        width = height = 0
    return Facts(content_type, len(data), width, height)


def check_request(spec: TaskTypeSpec | None, request: ProviderRequest, provider: str) -> None:
    """Before a provider runs: skip it (as unavailable, so the chain moves on) if it cannot take
    the inputs. Header reads only — no full decode."""
    if spec is None:
        raise ProviderUnavailable(f"{provider} does not serve {request.task_type}.")
    images = [_facts(i.data, i.content_type) for i in request.inputs]
    mask = _facts(request.mask.data, request.mask.content_type) if request.mask is not None else None
    reason = refusal(spec, images, mask)
    if reason is not None:
        raise ProviderUnavailable(f"{provider} cannot take this task's inputs: it {reason}.")
