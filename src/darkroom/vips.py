"""libvips (through pyvips and the self-contained ``pyvips-binary`` wheel) where it is much faster
than Pillow: PNG encoding of big images and thumbnails.

Imported lazily by :mod:`darkroom.imaging` (loading libvips costs ~0.1 s), so processes that
never encode a PNG or a preview never load it. Everything here is synchronous and CPU-bound.

Measured on this project's 12 MP cut-out (bench/FINDINGS.md, third pass): Pillow's PNG encoder
at zlib level 3 takes ~1.4 s (17.7 MB) because it tries all five row filters; libvips with the
``up`` filter at zlib level 3 takes ~0.4 s and writes 16.2 MB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np
import pyvips
from PIL import Image

PNG_FILTER: Final = "up"
"""Row filter. ``up`` suits photos (a row predicts the next) and costs one subtraction a byte;
``all`` (Pillow's adaptive choice) is 2-3x slower for a file of about the same size."""

_BANDS: Final = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}

# libvips' operation cache (by default up to 100 operations / 100 MB) would keep recent images
# alive; no operation here is ever repeated with the same input, so it only costs memory.
pyvips.cache_set_max(0)


def can_encode(img: Image.Image) -> bool:
    """8-bit gray/RGB with or without alpha; other modes go through Pillow."""
    return img.mode in _BANDS and "transparency" not in img.info


def from_pillow(img: Image.Image) -> Any:
    """A vips image over a copy of the pixels of an 8-bit L/LA/RGB/RGBA Pillow image."""
    bands = _BANDS[img.mode]
    pixels = np.asarray(img)
    vimg = pyvips.Image.new_from_memory(pixels.data, img.width, img.height, bands, "uchar")
    return vimg.copy(interpretation="srgb" if bands >= 3 else "b-w")


def encode_png_pixels(pixels: Any, *, icc_profile: bytes | None, compress_level: int) -> bytes:
    """PNG bytes of an ``H×W×C`` (C = 1-4) ``uint8`` array, read in place (no copy of the pixels),
    as :func:`encode_png`."""
    arr = np.ascontiguousarray(pixels)
    height, width = arr.shape[:2]
    bands = 1 if arr.ndim == 2 else arr.shape[2]
    vimg = pyvips.Image.new_from_memory(arr.data, width, height, bands, "uchar")
    vimg = vimg.copy(interpretation="srgb" if bands >= 3 else "b-w")
    return _save_png(vimg, icc_profile, compress_level)


def encode_png(img: Image.Image, *, icc_profile: bytes | None, compress_level: int) -> bytes:
    """PNG bytes of ``img`` (see :func:`can_encode`), lossless, no metadata but ``icc_profile``.

    libvips writes no text/EXIF/XMP chunks with ``keep="none"``; it does write a pHYs (resolution)
    chunk, which carries nothing about the photo or its author.
    """
    return _save_png(from_pillow(img), icc_profile, compress_level)


class VipsRejected(ValueError):
    """libvips could not read the image (corrupt or truncated)."""


def _save_png(vimg: Any, icc_profile: bytes | None, compress_level: int) -> bytes:
    keep = "none"  # drops every metadata item, an ICC profile included
    if icc_profile:
        vimg = vimg.copy()  # metadata is set on a fresh image, never on one libvips may share
        vimg.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc_profile)
        keep = "icc"
    data: bytes = vimg.pngsave_buffer(compression=compress_level, filter=PNG_FILTER, keep=keep)
    return data


def thumbnail(
    data: bytes,
    max_side: int,
    *,
    matching_icc: Callable[[bytes | None, str], bytes | None],
    jpeg_quality: int,
    png_level: int,
) -> tuple[bytes, str]:
    """``(bytes, "jpeg" | "png")``: a preview whose longer side is at most ``max_side``.

    libvips' ``thumbnail`` shrinks while loading (JPEG DCT scaling, WebP scaling), applies the EXIF
    orientation and never upscales. 16-bit images become 8-bit; images with transparency become
    RGBA PNG, the rest gray or RGB JPEG. No metadata but a matching ICC profile
    (``matching_icc(profile, "L" | "RGB" | "RGBA")`` decides). Truncated or broken data raises
    :class:`VipsRejected` (``fail_on="error"``).
    """
    try:
        vimg = pyvips.Image.thumbnail_buffer(
            data, max_side, height=max_side, size="down", option_string="fail_on=error"
        )
        if vimg.format != "uchar":  # 16-bit PNG and the like: scale down to 8 bits, don't clip
            vimg = vimg.colourspace("srgb" if vimg.bands >= 3 else "b-w")
            if vimg.format != "uchar":
                vimg = vimg.cast("uchar")
        alpha = vimg.hasalpha()
        if alpha and vimg.bands < 4:
            vimg = vimg.colourspace("srgb")  # gray + alpha -> RGBA
        elif not alpha and vimg.bands not in (1, 3):
            vimg = vimg.colourspace("srgb")[:3]
        icc = vimg.get("icc-profile-data") if vimg.get_typeof("icc-profile-data") else None
        mode = "RGBA" if alpha else ("L" if vimg.bands == 1 else "RGB")
        icc = matching_icc(icc, mode)
        if alpha:
            return _save_png(vimg, icc, png_level), "png"
        out: bytes = vimg.jpegsave_buffer(Q=jpeg_quality, keep="icc" if icc else "none")
        return out, "jpeg"
    except pyvips.Error as exc:
        detail = " ".join(getattr(exc, "detail", "").split()) or str(exc).strip() or "unreadable"
        raise VipsRejected(detail[:300]) from None
