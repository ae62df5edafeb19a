"""Image utilities shared by the upload path and the providers.

Everything here is synchronous and CPU-bound: call it from a worker thread or process,
never directly on the event loop for big images.

* :func:`sniff_image_type` looks at magic bytes only.
* :func:`check_upload` validates an upload: type by magic bytes, pixel count from the header
  (before any pixel is decoded, so decompression bombs cost nothing), then the file's structure.
* :func:`inspect_image` does the same with a full decode instead of the structure check.
* :func:`open_image` decodes and applies the EXIF orientation; :func:`open_image_reduced` does the
  same at a reduced JPEG DCT scale when the caller needs fewer pixels; :func:`open_rgba` decodes
  into an ``H×W×4`` array (a JPEG straight into it, through libjpeg-turbo).
* :func:`encode_png` / :func:`encode_jpeg` write images without metadata (no EXIF, GPS, XMP,
  comments, text chunks); only an ICC profile is written, and only when passed explicitly.
  8-bit PNGs are written by :mod:`darkroom.png`.
* :func:`thumbnail` makes small previews.

Truncated files are rejected because Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is False by
default; nothing in darkroom may set it to True.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from darkroom import image_structure, png

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
WEBP: Final = "image/webp"

#: Default pixel cap (50 MP) for helpers that take ``max_pixels`` as an optional argument.
DEFAULT_MAX_PIXELS: Final = 50_000_000

PNG_COMPRESS_LEVEL: Final = 3
"""zlib level for the PNGs that zlib writes: thumbnails (libvips) and the modes :mod:`darkroom.png`
does not write (P, 1, I;16: Pillow). 8-bit L/LA/RGB/RGBA output is written by :mod:`darkroom.png`
(ISA-L deflate, ``up`` filter): an opaque 12 MP photo as RGBA in ~0.2 s / 16.8 MB, where libvips
at this level took ~0.87 s / 15.9 MB and Pillow ~1.4 s."""

_PIL_FORMATS: Final = {JPEG: "JPEG", PNG: "PNG", WEBP: "WEBP"}
_PNG_BANDS: Final = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}  # modes darkroom.png writes
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


class ImageRejected(Exception):
    """An image the service refuses. ``code`` is stable, ``message`` is for humans.

    Codes: ``unsupported_image_type``, ``corrupt_image``, ``image_too_large``.
    Picklable, so it can cross a process-pool boundary.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def sniff_image_type(data: bytes) -> str | None:
    """Return ``image/jpeg``, ``image/png`` or ``image/webp`` from the magic bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(_PNG_SIGNATURE):
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def _open_header(data: image_structure.Data, max_pixels: int) -> tuple[ImageFile.ImageFile, str]:
    """Sniff, parse the header only, and enforce the pixel cap. No pixel data is decoded."""
    content_type = sniff_image_type(data[:16])
    if content_type is None:
        raise ImageRejected("unsupported_image_type", "The file is not a JPEG, PNG or WebP image.")
    source: IO[bytes]
    if isinstance(data, mmap.mmap):
        data.seek(0)
        source = cast(IO[bytes], data)  # a mapped file is read in place (a BytesIO would copy it)
    else:
        source = io.BytesIO(data)
    try:
        img = Image.open(source, formats=[_PIL_FORMATS[content_type]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow checks its own limit (MAX_IMAGE_PIXELS) while reading the header. The warning is
        # only raised as an exception when warnings are errors (as under pytest); otherwise it is
        # just emitted and the explicit check below rejects the image.
        raise ImageRejected("image_too_large", f"The image has more than {max_pixels:,} pixels.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"The image could not be read: {exc}") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt_image", "The image has no pixels.")
    if width * height > max_pixels:
        img.close()
        raise ImageRejected(
            "image_too_large",
            f"The image is {width}x{height} ({width * height:,} pixels); the limit is {max_pixels:,} pixels.",
        )
    return img, content_type


def _decode(img: ImageFile.ImageFile) -> None:
    """Decode every pixel; truncated or broken data raises ImageRejected('corrupt_image')."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise ImageRejected("corrupt_image", f"The image data is corrupt or truncated: {exc}") from None


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Validate an image and return its type and stored (not EXIF-rotated) size.

    Raises :class:`ImageRejected`. The header size check happens before any pixel is decoded;
    then the whole image is decoded (a JPEG at 1/8 DCT scale, see below; a 12 MP PNG takes ~0.25 s).
    """
    img, content_type = _open_header(data, max_pixels)
    with img:
        width, height = img.size
        if content_type == JPEG:
            # Every entropy-coded block is still read and Huffman-decoded (so truncated or
            # broken data is caught exactly as by a full decode), but the inverse DCT runs at 1/8
            # scale: a 12 MP check then holds ~0.6 MB of pixels instead of 36 MB, and is faster.
            img.draft(img.mode, ((width + 7) // 8, (height + 7) // 8))
        _decode(img)
    return ImageInfo(content_type=content_type, width=width, height=height)


def check_upload(data: image_structure.Data, max_pixels: int) -> ImageInfo:
    """Validate an upload without decoding its pixels; return its type and stored size.

    Type from the magic bytes, pixel count from the header (as :func:`inspect_image`), then the
    file's structure (:mod:`darkroom.image_structure`: markers and EOI, chunk CRCs and IEND, RIFF
    sizes), which is O(n) at memory speed. Raises :class:`ImageRejected`. The full decode happens
    where the pixels are needed (the provider); a file that passes this check but does not decode
    fails its task with ``invalid_input`` there.
    """
    if len(data) == 0:
        raise ImageRejected("empty_file", "The file is empty.")
    img, content_type = _open_header(data, max_pixels)
    with img:
        width, height = img.size
    try:
        image_structure.check(data, content_type)
    except image_structure.StructureError as exc:
        raise ImageRejected("corrupt_image", f"The image is corrupt or truncated: {exc}.") from None
    return ImageInfo(content_type=content_type, width=width, height=height)


def check_upload_file(path: Path, max_pixels: int) -> ImageInfo:
    """:func:`check_upload` on a file (an upload streamed to disk), mapped read-only: the bytes are
    read from the page cache in place, never copied into one ``bytes``. An empty file is refused."""
    with open(path, "rb") as fh:
        if fh.seek(0, io.SEEK_END) == 0:
            raise ImageRejected("empty_file", "The file is empty.")
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return check_upload(data, max_pixels)
    finally:
        # Still exported while an exception's traceback holds a view: then the mapping goes
        # with the last reference instead.
        with contextlib.suppress(BufferError):
            data.close()


def _apply_orientation(img: Image.Image) -> Image.Image:
    # unreadable EXIF: keep the stored orientation rather than failing the upload
    with contextlib.suppress(SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error):
        ImageOps.exif_transpose(img, in_place=True)
    return img


def _strip_info(img: Image.Image) -> None:
    """Drop metadata from ``img.info``; keep only what decoding/encoding needs."""
    kept: dict[str | tuple[int, int], Any] = {
        k: img.info[k] for k in ("icc_profile", "transparency") if k in img.info
    }
    img.info.clear()
    img.info.update(kept)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode an image fully, apply its EXIF orientation and drop its metadata.

    ``img.info`` keeps only ``icc_profile`` and ``transparency``; everything else (EXIF, XMP,
    comments, text chunks) is gone. Raises :class:`ImageRejected`.
    """
    img, _ = _open_header(data, max_pixels)
    return _load_oriented(img)


def _load_oriented(img: ImageFile.ImageFile) -> Image.Image:
    _decode(img)
    oriented = _apply_orientation(img)
    _strip_info(oriented)
    return oriented


_TRANSPOSING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})  # EXIF values that swap width and height


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) as :func:`_apply_orientation` will apply it; 1 if unreadable."""
    try:
        value = img.getexif().get(0x0112, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def open_image_reduced(
    data: bytes, max_pixels: int, min_size: Callable[[int, int], tuple[int, int]]
) -> tuple[Image.Image, tuple[int, int]]:
    """Like :func:`open_image`, but a JPEG may be decoded at 1/2, 1/4 or 1/8 scale.

    ``min_size(width, height)`` gets the full EXIF-oriented size and returns the smallest
    (oriented) size the caller needs; the JPEG decoder's DCT scaling then produces the smallest
    scale that is at least that large on both sides (a 12 MP photo needed at 1600x1200 decodes
    at 2000x1500, in about half the time and a quarter of the memory). Other formats are decoded
    at full size. Returns ``(oriented image, full oriented size)``; the image is never smaller
    than ``min_size`` unless the full image is. Raises :class:`ImageRejected`.
    """
    img, content_type = _open_header(data, max_pixels)
    stored_w, stored_h = img.size
    transposed = _orientation(img) in _TRANSPOSING_ORIENTATIONS
    full = (stored_h, stored_w) if transposed else (stored_w, stored_h)
    if content_type == JPEG:
        need_w, need_h = min_size(*full)
        if transposed:
            need_w, need_h = need_h, need_w
        if need_w < stored_w and need_h < stored_h:
            img.draft(img.mode, (max(1, need_w), max(1, need_h)))
    _decode(img)
    oriented = _apply_orientation(img)
    _strip_info(oriented)
    return oriented, full


class RGBAPixels(NamedTuple):
    """A decoded image as an array: see :func:`open_rgba`."""

    pixels: npt.NDArray[np.uint8]
    """``H×W×4`` (RGBA), C-contiguous and writable, EXIF orientation applied."""
    icc_profile: bytes | None
    has_alpha: bool
    """False: the source had no transparency and every alpha is 255."""


def open_rgba(
    data: bytes, max_pixels: int, *, buffer: Callable[[int], npt.NDArray[np.uint8] | None] | None = None
) -> RGBAPixels:
    """Decode an image into an 8-bit RGBA array, EXIF orientation applied, no metadata kept but the
    ICC profile (not checked against RGB: pass it through :func:`encode_png_pixels`, which drops a
    profile of another colour space).

    A YCbCr or gray JPEG is decoded by libjpeg-turbo (``simplejpeg``) straight into the 4-channel
    array; through Pillow a 12 MP JPEG took ~80 ms to decode plus ~100 ms for ``np.asarray`` (Pillow
    stores RGB as 4 bytes a pixel and packs them to 3) and ~30 ms to add the alpha channel; this
    is ~60 ms in all (bench/FINDINGS.md, sixth pass). The pixels are the same: libjpeg-turbo with the
    same (default) IDCT and upsampling as Pillow's decoder. The pixel cap is checked from the header
    first (:func:`open_image`'s checks); a JPEG that libjpeg-turbo's TurboJPEG interface refuses or
    finds damaged (it stops at warnings such as "premature end of data") is handed to Pillow, which
    decodes it or rejects it as :func:`open_image` does. Other images (PNG, WebP, CMYK JPEG) are
    decoded by Pillow. Raises :class:`ImageRejected`.

    ``buffer``: called by the JPEG path with the bytes its decode needs (``width × height × 4``,
    known from the header) for a writable C-contiguous array to decode into; one that is smaller
    (or None) is not used. The pixels are then a view of it.
    """
    img, content_type = _open_header(data, max_pixels)
    if content_type == JPEG and img.mode in ("RGB", "L"):
        width, height = img.size
        into = buffer(width * height * 4) if buffer is not None else None
        fits = into is not None and into.flags.c_contiguous and into.nbytes >= width * height * 4
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGBA", buffer=into if fits else None)
        except ValueError:
            pass  # Pillow decides below: a valid file TurboJPEG does not take, or a corrupt one
        else:
            icc = img.info.get("icc_profile")
            orientation = _orientation(img)
            img.close()
            return RGBAPixels(_orient_pixels(pixels, orientation), icc, False)
    oriented = ensure_8bit(_load_oriented(img))
    icc = oriented.info.get("icc_profile")
    alpha = has_alpha(oriented)
    rgba = oriented if oriented.mode == "RGBA" else oriented.convert("RGBA")
    return RGBAPixels(np.array(rgba, dtype=np.uint8), icc, alpha)


def _orient_pixels(pixels: npt.NDArray[np.uint8], orientation: int) -> npt.NDArray[np.uint8]:
    """``pixels`` turned as Pillow's ``exif_transpose`` turns an image with EXIF ``orientation``."""
    if orientation == 1:
        return pixels
    import cv2  # lazy: only the model workers decode into arrays

    if orientation == 2:
        out = cv2.flip(pixels, 1)  # mirrored left-right
    elif orientation == 3:
        out = cv2.flip(pixels, -1)  # 180°
    elif orientation == 4:
        out = cv2.flip(pixels, 0)  # mirrored top-bottom
    elif orientation == 5:
        out = cv2.transpose(pixels)
    elif orientation == 6:
        out = cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    elif orientation == 7:
        out = cv2.flip(cv2.transpose(pixels), -1)  # transverse
    else:
        out = cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return np.asarray(out, dtype=np.uint8)


def has_alpha(img: Image.Image) -> bool:
    """True when the image carries transparency (alpha band or a transparency key)."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def ensure_8bit(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer grayscale (e.g. 16-bit PNG, mode ``I;16``/``I``) to 8-bit ``L``.

    Pillow's own conversion to ``L``/``RGB`` clips such images to white instead of scaling them.
    Other modes are returned unchanged.
    """
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return img
    arr = np.asarray(img, dtype=np.float32)
    if float(arr.max(initial=0.0)) > 255.0:
        arr = arr / np.float32(257.0)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _matching_icc(icc_profile: bytes | None, mode: str) -> bytes | None:
    """The profile if its colour space fits ``mode`` (RGB for RGB/RGBA/P, GRAY for L/LA), else None.

    A CMYK photo converted to RGB, or a colour photo turned black and white, must not carry its
    old profile.
    """
    if not icc_profile or len(icc_profile) < 20:
        return None
    space = icc_profile[16:20]
    if (mode in ("RGB", "RGBA", "P") and space == b"RGB ") or (mode in ("L", "LA") and space == b"GRAY"):
        return icc_profile
    return None


def encode_png(
    img: Image.Image, *, icc_profile: bytes | None = None, compress_level: int = PNG_COMPRESS_LEVEL
) -> bytes:
    """PNG bytes with no metadata chunks (no eXIf, tEXt/iTXt/zTXt, pHYs).

    ``icc_profile`` is written (iCCP) only when given and its colour space matches the image.
    8-bit L/LA/RGB/RGBA images are written by :mod:`darkroom.png`; ``compress_level`` (zlib) applies
    to the other modes (P, 1, I, I;16, or a transparency key), which Pillow writes.
    """
    if img.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        img = img.convert("RGBA" if has_alpha(img) else "RGB")
    icc_profile = _matching_icc(icc_profile, img.mode)
    if img.mode in _PNG_BANDS and "transparency" not in img.info:
        return png.encode(np.asarray(img), icc_profile=icc_profile)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=compress_level, icc_profile=icc_profile)
    return buf.getvalue()


def encode_png_pixels(
    pixels: npt.NDArray[np.uint8], *, icc_profile: bytes | None = None, prepare: png.Prepare | None = None
) -> bytes:
    """:func:`encode_png` of an ``H×W`` / ``H×W×C`` ``uint8`` array (C = 1 L, 2 LA, 3 RGB, 4 RGBA),
    straight from the array (no Pillow image). ``prepare``: see :func:`darkroom.png.encode`."""
    bands = 1 if pixels.ndim == 2 else int(pixels.shape[2])
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or not 1 <= bands <= 4:
        raise ValueError(f"expected an H×W or H×W×C (C ≤ 4) uint8 array, got {pixels.dtype} {pixels.shape}")
    mode = ("L", "LA", "RGB", "RGBA")[bands - 1]
    return png.encode(pixels, icc_profile=_matching_icc(icc_profile, mode), prepare=prepare)


def encode_jpeg(img: Image.Image, quality: int = 92, *, icc_profile: bytes | None = None) -> bytes:
    """JPEG bytes with no EXIF, XMP or comment; ``icc_profile`` only if given and matching.

    Images with alpha are flattened onto white (JPEG has no alpha).
    """
    if img.mode not in ("L", "RGB"):
        if has_alpha(img):
            rgba = img.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            img = flat
        else:
            img = img.convert("RGB")
    buf = io.BytesIO()
    icc = _matching_icc(icc_profile, img.mode)
    img.save(buf, "JPEG", quality=quality, icc_profile=icc, exif=b"", comment=b"")
    return buf.getvalue()


def thumbnail(data: bytes, max_side: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A preview whose longer side is at most ``max_side``, EXIF-oriented, without metadata.

    JPEG when the image is opaque (quality 85), PNG when it has transparency; only an ICC profile
    of the matching colour space is kept. The pixel cap is checked from the header first; then
    libvips (:func:`darkroom.vips.thumbnail`) shrinks while decoding. CMYK JPEGs go through
    Pillow, whose plain CMYK->RGB conversion the rest of darkroom uses (libvips would convert
    through a default print profile and give other colours). Raises :class:`ImageRejected`.
    """
    if max_side < 1:
        raise ValueError("max_side must be positive")
    img, _ = _open_header(data, max_pixels)
    if img.mode == "CMYK":
        return _pillow_thumbnail(img, max_side)
    img.close()
    from darkroom import vips  # lazy: loading libvips costs ~0.1 s

    try:
        out, _kind = vips.thumbnail(
            data, max_side, matching_icc=_matching_icc, jpeg_quality=85, png_level=PNG_COMPRESS_LEVEL
        )
    except vips.VipsRejected as exc:
        raise ImageRejected("corrupt_image", f"The image data is corrupt or truncated: {exc}") from None
    return out


def _pillow_thumbnail(img: ImageFile.ImageFile, max_side: int) -> bytes:
    if img.format == "JPEG":
        # draft picks the smallest scale that is still >= the requested size, orientation-agnostic
        img.draft("RGB", (max_side, max_side))
    _decode(img)
    oriented = _apply_orientation(img)
    icc = oriented.info.get("icc_profile")
    _strip_info(oriented)
    oriented = ensure_8bit(oriented)
    if has_alpha(oriented):
        if oriented.mode != "RGBA":  # converting to the same mode would copy every pixel
            oriented = oriented.convert("RGBA")
    elif oriented.mode not in ("L", "RGB"):
        oriented = oriented.convert("RGB")
    oriented.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    if oriented.mode == "RGBA":
        return encode_png(oriented, icc_profile=icc)
    return encode_jpeg(oriented, quality=85, icc_profile=icc)
