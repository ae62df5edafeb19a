"""libvips (through pyvips and the self-contained ``pyvips-binary`` wheel) where it is much faster
than Pillow: thumbnails (shrink-on-load, then JPEG or PNG).

Imported lazily by :mod:`darkroom.imaging` (loading libvips costs ~0.1 s), so processes that
never make a preview never load it. Everything here is synchronous and CPU-bound.

Full-size PNG output is written by :mod:`darkroom.png` (bench/FINDINGS.md, sixth pass), not here:
libvips' PNG encoder took ~0.7 s for the 12 MP cut-out of figure 7 at zlib level 3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import pyvips

PNG_FILTER: Final = "up"
"""Row filter. ``up`` suits photos (a row predicts the next) and costs one subtraction a byte;
``all`` (Pillow's adaptive choice) is 2-3x slower for a file of about the same size."""

# libvips' operation cache (by default up to 100 operations / 100 MB) would keep recent images
# alive; no operation here is ever repeated with the same input, so it only costs memory.
pyvips.cache_set_max(0)


class VipsRejected(ValueError):
    """libvips could not read the image (corrupt or truncated)."""


def _save_png(vimg: Any, icc_profile: bytes | None, compress_level: int) -> bytes:
    """libvips writes no text/EXIF/XMP chunks with ``keep="none"``; it does write a pHYs (resolution)
    chunk, which carries nothing about the photo or its author."""
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
