"""Resampling of 8-bit pixel arrays with OpenCV, for the big images of the local operations.

Pillow's Lanczos took ~110 ms to take a 12 MP photo down to 1600 px and ~120 ms to take the
style result back up (bench/FINDINGS.md); OpenCV's area average down and bicubic up take a
fraction of that on the same arrays. Shrinking uses ``INTER_AREA`` (every source pixel
contributes, so no aliasing, as Pillow's box/Lanczos reduction); enlarging uses ``INTER_CUBIC``
(sharper than bilinear, close to Lanczos for these factors), or ``INTER_LINEAR`` for masks, where a
cubic kernel's overshoot would only be clipped away. Arrays are ``H×W`` or ``H×W×C`` ``uint8``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Pixels = npt.NDArray[np.uint8]


def resize(pixels: Pixels, size: tuple[int, int], *, smooth_up: bool = True) -> Pixels:
    """``pixels`` resampled to ``size`` = (width, height); the same array when nothing changes.

    Area averaging when both sides shrink (or stay), otherwise bicubic (``smooth_up``) or bilinear.
    """
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"expected an H×W or H×W×C uint8 array, got {pixels.dtype} {pixels.shape}")
    src_h, src_w = pixels.shape[:2]
    if (src_w, src_h) == (width, height):
        return pixels
    if width <= src_w and height <= src_h:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC if smooth_up else cv2.INTER_LINEAR
    out: Any = cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=interpolation)
    if pixels.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    return np.asarray(out, dtype=np.uint8)
