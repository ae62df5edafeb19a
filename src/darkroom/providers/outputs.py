"""Turning what a provider sent back into checked :class:`OutputImage` values."""

from __future__ import annotations

import asyncio
import base64
import binascii

from darkroom import imaging
from darkroom.providers.base import OutputImage, ProviderError

MAX_OUTPUT_PIXELS = 100_000_000


def _inspect(data: bytes) -> OutputImage:
    try:
        info = imaging.inspect_image(data, MAX_OUTPUT_PIXELS)
    except imaging.ImageRejected as exc:
        raise ProviderError(f"The provider's result is not a usable image: {exc.message}") from None
    return OutputImage(data=data, content_type=info.content_type, width=info.width, height=info.height)


async def output_image(data: bytes) -> OutputImage:
    """Sniff and fully decode (off the event loop) the bytes a provider returned."""
    return await asyncio.to_thread(_inspect, data)


def decode_b64(provider: str, value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise ProviderError(f"{provider} sent a malformed answer (no base64 image).")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderError(f"{provider} sent a malformed answer (invalid base64 image).") from None
