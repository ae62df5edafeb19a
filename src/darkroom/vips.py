"""libvips (through pyvips and the self-contained ``pyvips-binary`` wheel) where it is much faster
than Pillow: PNG encoding of big images and thumbnails.

Imported lazily by :mod:`darkroom.imaging` (loading libvips costs ~0.1 s), so processes that
never encode a PNG or a preview never load it. Everything here is synchronous and CPU-bound.

Measured on this project's 12 MP cut-out (bench/FINDINGS.md, third pass): Pillow's PNG encoder
at zlib level 3 takes ~1.4 s (17.7 MB) because it tries all five row filters; libvips with the
``up`` filter at zlib level 3 takes ~0.4 s and writes 16.2 MB.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pyvips
from PIL import Image

PNG_FILTER: Final = "up"
"""Row filter. ``up`` suits photos (a row predicts the next) and costs one subtraction a byte;
``all`` (Pillow's adaptive choice) is 2-3x slower for a file of about the same size."""

_BANDS: Final = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def can_encode(img: Image.Image) -> bool:
    """8-bit gray/RGB with or without alpha; other modes go through Pillow."""
    return img.mode in _BANDS and "transparency" not in img.info


def from_pillow(img: Image.Image) -> Any:
    """A vips image over a copy of the pixels of an 8-bit L/LA/RGB/RGBA Pillow image."""
    bands = _BANDS[img.mode]
    pixels = np.asarray(img)
    vimg = pyvips.Image.new_from_memory(pixels.data, img.width, img.height, bands, "uchar")
    return vimg.copy(interpretation="srgb" if bands >= 3 else "b-w")


def encode_png(img: Image.Image, *, icc_profile: bytes | None, compress_level: int) -> bytes:
    """PNG bytes of ``img`` (see :func:`can_encode`), lossless, no metadata but ``icc_profile``.

    libvips writes no text/EXIF/XMP chunks with ``keep="none"``; it does write a pHYs (resolution)
    chunk, which carries nothing about the photo or its author.
    """
    vimg = from_pillow(img)
    keep = "none"
    if icc_profile:
        vimg.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc_profile)
        keep = "icc"
    data: bytes = vimg.pngsave_buffer(compression=compress_level, filter=PNG_FILTER, keep=keep)
    return data
