"""Colour enhancements: plain Pillow operations (curves via lookup tables, ImageEnhance, ImageOps).

Every function takes an opaque ``RGB`` image and returns a new image of the same size (``RGB``,
or ``L`` for black and white). Each one takes well under a second on a 12 MP photo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Final

from PIL import Image, ImageEnhance, ImageOps, ImageStat

Enhancer = Callable[[Image.Image], Image.Image]


def _lut(fn: Callable[[float], float]) -> list[int]:
    """256-entry lookup table from a curve on 0..255."""
    return [max(0, min(255, round(fn(float(v))))) for v in range(256)]


def _curves(img: Image.Image, red: list[int], green: list[int], blue: list[int]) -> Image.Image:
    return img.point(red + green + blue)


def _gains(img: Image.Image, red: float, green: float, blue: float, lift: float = 0.0) -> Image.Image:
    return _curves(
        img,
        _lut(lambda v: v * red + lift),
        _lut(lambda v: v * green + lift),
        _lut(lambda v: v * blue + lift),
    )


def _gray_world(img: Image.Image, amount: float = 0.6) -> Image.Image:
    """Partial gray-world white balance: pull the channel means toward their average."""
    small = img.copy()
    small.thumbnail((256, 256), Image.Resampling.BILINEAR)
    means = [max(1.0, m) for m in ImageStat.Stat(small).mean]
    gray = sum(means) / 3.0
    gains = [min(1.25, max(0.8, 1.0 + amount * (gray / m - 1.0))) for m in means]
    return _gains(img, *gains)


def auto(img: Image.Image) -> Image.Image:
    """Gray-world white balance, contrast stretch (0.5 % clipped), a little saturation and sharpness."""
    out = _gray_world(img)
    out = ImageOps.autocontrast(out, cutoff=0.5, preserve_tone=True)
    out = ImageEnhance.Color(out).enhance(1.12)
    return ImageEnhance.Sharpness(out).enhance(1.2)


def vivid(img: Image.Image) -> Image.Image:
    """Strongly boosted saturation with a touch more contrast."""
    out = ImageEnhance.Color(img).enhance(1.5)
    out = ImageEnhance.Contrast(out).enhance(1.12)
    return ImageEnhance.Sharpness(out).enhance(1.1)


def warm(img: Image.Image) -> Image.Image:
    """Golden-hour tint: more red and yellow, less blue."""
    out = _curves(img, _lut(lambda v: v * 1.06 + 8), _lut(lambda v: v * 1.01 + 3), _lut(lambda v: v * 0.88))
    return ImageEnhance.Color(out).enhance(1.05)


def cool(img: Image.Image) -> Image.Image:
    """Cool daylight tint: more blue and cyan, less red."""
    out = _curves(img, _lut(lambda v: v * 0.9), _lut(lambda v: v * 1.0 + 3), _lut(lambda v: v * 1.06 + 8))
    return ImageEnhance.Color(out).enhance(0.97)


def black_and_white(img: Image.Image) -> Image.Image:
    """Monochrome with a slight red-filter mix (darker skies), then a contrast stretch. Mode ``L``."""
    gray = img.convert("L", matrix=(0.36, 0.54, 0.10, 0.0))
    return ImageOps.autocontrast(gray, cutoff=0.3)


def vintage(img: Image.Image) -> Image.Image:
    """Faded film: muted colours, lifted blacks, warm cast and a soft vignette."""
    out = ImageEnhance.Color(img).enhance(0.6)
    out = _curves(
        out,
        _lut(lambda v: 24 + v * 0.86),
        _lut(lambda v: 16 + v * 0.84),
        _lut(lambda v: 6 + v * 0.78),
    )
    return _vignette(out, darkness=0.35)


def high_contrast(img: Image.Image) -> Image.Image:
    """Punchy: 1.5 % clipped contrast stretch, an S-curve and extra sharpness."""
    out = ImageOps.autocontrast(img, cutoff=1.5, preserve_tone=True)
    k = 3.0
    norm = math.tanh(k * 0.5)
    s_curve = _lut(lambda v: 127.5 + 127.5 * math.tanh(k * (v / 255.0 - 0.5)) / norm)
    out = out.point(s_curve * 3)
    return ImageEnhance.Sharpness(out).enhance(1.3)


def _vignette(img: Image.Image, darkness: float) -> Image.Image:
    """Darken toward the corners by up to ``darkness`` (0..1)."""
    # radial_gradient is 0 at the centre and 255 at the middle of each edge (more in the corners)
    falloff = Image.radial_gradient("L").point(_lut(lambda v: 255.0 * min(1.0, v / 300.0) ** 2))
    mask = falloff.resize(img.size, Image.Resampling.BILINEAR)
    dark = ImageEnhance.Brightness(img).enhance(1.0 - darkness)
    return Image.composite(dark, img, mask)


ENHANCEMENTS: Final[MappingProxyType[str, Enhancer]] = MappingProxyType(
    {
        "auto": auto,
        "vivid": vivid,
        "warm": warm,
        "cool": cool,
        "black_and_white": black_and_white,
        "vintage": vintage,
        "high_contrast": high_contrast,
    }
)
DEFAULT_ENHANCEMENT: Final = "auto"

DESCRIPTION: Final = (
    "auto: white balance, contrast stretch, a little saturation and sharpness; "
    "vivid: strong saturation; warm: golden tint; cool: blue tint; "
    "black_and_white: monochrome; vintage: faded film with vignette; high_contrast: punchy S-curve."
)


def enhance(img: Image.Image, name: str, strength: float = 1.0) -> Image.Image:
    """Apply enhancement ``name`` to an ``RGB`` image, mixed with the original by ``strength`` (0..1)."""
    try:
        fn = ENHANCEMENTS[name]
    except KeyError:
        raise ValueError(f"unknown enhancement {name!r}") from None
    if img.mode != "RGB":
        raise ValueError(f"enhance() needs an RGB image, got {img.mode}")
    out = fn(img)
    if strength >= 1.0:
        return out
    if out.mode != img.mode:
        out = out.convert(img.mode)
    return Image.blend(img, out, max(0.0, float(strength)))
