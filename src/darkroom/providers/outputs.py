"""Turning what a provider sent back into checked :class:`OutputImage` values."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from darkroom import imaging
from darkroom.providers.base import OutputImage, ProviderError, StagedOutput
from darkroom.storage.base import Storage
from darkroom.storage.keys import new_key

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


def discard_staged(outputs: Iterable[OutputImage | StagedOutput]) -> None:
    """Remove the files of staged outputs that will not be stored (idempotent)."""
    for out in outputs:
        if isinstance(out, StagedOutput):
            out.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StoredOutput:
    key: str
    content_type: str
    size: int
    width: int
    height: int


def _sniff_file(path: Path) -> str | None:
    with open(path, "rb") as fh:
        return imaging.sniff_image_type(fh.read(16))


async def store_output(storage: Storage, name: str, out: OutputImage | StagedOutput) -> StoredOutput | None:
    """Store one output of a task under a new key in ``outputs/`` (``name`` goes into the key).

    The type is sniffed from the bytes (a staged file's first bytes): None, and nothing stored,
    when they are not an image. A staged file is moved into place (``Storage.put_file``), or
    removed when it is not stored.
    """
    if isinstance(out, StagedOutput):
        stored = None
        try:
            content_type = await asyncio.to_thread(_sniff_file, out.path)
            if content_type is not None:
                key = new_key("outputs", name, content_type)
                await storage.put_file(key, out.path, content_type)  # consumes the file
                stored = StoredOutput(key, content_type, out.size, out.width, out.height)
        finally:
            if stored is None:
                out.path.unlink(missing_ok=True)
        return stored
    content_type = imaging.sniff_image_type(out.data)
    if content_type is None:
        return None
    key = new_key("outputs", name, content_type)
    await storage.put(key, out.data, content_type)
    return StoredOutput(key, content_type, len(out.data), out.width, out.height)
