from __future__ import annotations

import io
import pickle
import resource
import struct
import time
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from darkroom.imaging import (
    ImageInfo,
    ImageRejected,
    encode_jpeg,
    encode_png,
    encode_png_pixels,
    inspect_image,
    open_image,
    open_image_reduced,
    open_rgba,
    sniff_image_type,
    thumbnail,
)
from tests.fixtures.photos import encode, has_metadata, jpeg_with_exif, scene, with_alpha

MAX = 50_000_000


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(scene(64, 48), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- sniffing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_sniff_real_images(fmt: str, expected: str) -> None:
    assert sniff_image_type(encode(scene(32, 24), fmt)) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"GIF89a" + b"\x00" * 20,
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"RIFF\x00\x00",
        b"\x89PNG\r\n",  # incomplete signature
        b"\xff\xd8",  # incomplete JPEG magic
        b"%PDF-1.7",
    ],
)
def test_sniff_rejects_non_images(data: bytes) -> None:
    assert sniff_image_type(data) is None


# --- inspect_image --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_inspect_valid(fmt: str) -> None:
    info = inspect_image(encode(scene(120, 80), fmt), MAX)
    assert info == ImageInfo(content_type=f"image/{fmt.lower()}", width=120, height=80)


def test_inspect_reports_stored_size_of_rotated_jpeg() -> None:
    info = inspect_image(jpeg_with_exif(300, 200, orientation=6), MAX)
    assert (info.width, info.height) == (300, 200)


def test_unsupported_type() -> None:
    gif = encode(scene(20, 20).convert("P"), "GIF")
    with pytest.raises(ImageRejected) as err:
        inspect_image(gif, MAX)
    assert err.value.code == "unsupported_image_type"
    assert err.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + b"garbage" * 20,  # PNG signature, garbage after
        png_declaring(64, 64),  # valid header, IDAT far too short for the pixels
        b"\xff\xd8\xff" + b"\x00" * 50,  # JPEG magic, garbage after
        b"RIFF\x10\x00\x00\x00WEBPVP8 garbage!",  # WebP magic, garbage after
    ],
)
def test_corrupt_images(data: bytes) -> None:
    with pytest.raises(ImageRejected) as err:
        inspect_image(data, MAX)
    assert err.value.code == "corrupt_image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_is_corrupt(fmt: str) -> None:
    data = encode(scene(400, 300), fmt)
    with pytest.raises(ImageRejected) as err:
        inspect_image(data[: len(data) * 2 // 3], MAX)
    assert err.value.code == "corrupt_image"


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (20000, 20000, MAX),  # 400 MP: beyond Pillow's own DecompressionBombError limit
        (10000, 10000, MAX),  # 100 MP: Pillow's DecompressionBombWarning range (an error under pytest)
        (5000, 5000, 10_000_000),  # 25 MP: only our own limit applies
    ],
)
def test_too_large_png_is_rejected_from_the_header(width: int, height: int, max_pixels: int) -> None:
    data = png_declaring(width, height)
    before = _peak_rss_mb()
    start = time.perf_counter()
    with pytest.raises(ImageRejected) as err:
        inspect_image(data, max_pixels)
    assert err.value.code == "image_too_large"
    assert time.perf_counter() - start < 0.5
    assert _peak_rss_mb() - before < 50  # nothing near width*height*3 bytes was allocated


def test_too_large_jpeg_is_rejected_from_the_header() -> None:
    with pytest.raises(ImageRejected) as err:
        inspect_image(jpeg_declaring(12000, 9000), MAX)
    assert err.value.code == "image_too_large"


def test_open_image_too_large() -> None:
    with pytest.raises(ImageRejected) as err:
        open_image(png_declaring(20000, 20000), MAX)
    assert err.value.code == "image_too_large"


def test_image_rejected_pickles() -> None:
    exc = ImageRejected("corrupt_image", "The image is broken.")
    clone = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, as the process pool does
    assert (clone.code, clone.message, str(clone)) == (
        "corrupt_image",
        "The image is broken.",
        "The image is broken.",
    )


def test_inspect_12mp_jpeg_reports_its_full_size() -> None:
    # Decoded at 1/8 DCT scale for the check; the size reported is still the stored one.
    # (How fast it is, is bench/'s business, not a test's.)
    data = encode(scene(1000, 750).resize((4000, 3000), Image.Resampling.BICUBIC), "JPEG")
    info = inspect_image(data, MAX)
    assert (info.width, info.height, info.content_type) == (4000, 3000, "image/jpeg")


# --- open / encode --------------------------------------------------------------------------------


def test_open_image_applies_orientation_and_drops_metadata() -> None:
    img = open_image(jpeg_with_exif(300, 200, orientation=6), MAX)
    assert img.size == (200, 300)
    assert set(img.info) <= {"icc_profile", "transparency"}
    for out in (encode_jpeg(img), encode_png(img)):
        assert not has_metadata(out)
        with Image.open(io.BytesIO(out)) as reread:
            assert reread.size == (200, 300)


def test_encoders_ignore_metadata_in_info() -> None:
    img = scene(64, 48)
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    img.info.update({"exif": exif.tobytes(), "comment": b"private comment", "dpi": (300, 300)})
    assert not has_metadata(encode_jpeg(img))
    assert not has_metadata(encode_png(img))


def test_encoders_keep_an_explicit_icc_profile() -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for out in (encode_jpeg(scene(32, 32), icc_profile=icc), encode_png(scene(32, 32), icc_profile=icc)):
        with Image.open(io.BytesIO(out)) as reread:
            assert reread.info.get("icc_profile") == icc


def test_encode_jpeg_flattens_alpha_and_png_keeps_it() -> None:
    rgba = with_alpha(scene(64, 48))
    with Image.open(io.BytesIO(encode_jpeg(rgba))) as jpg:
        assert jpg.mode == "RGB"
        assert np.asarray(jpg)[2, 2].min() > 240  # transparent -> white
    with Image.open(io.BytesIO(encode_png(rgba))) as png:
        assert png.mode == "RGBA"
        assert png.getchannel("A").getextrema() == (0, 255)


def test_open_image_keeps_webp_alpha() -> None:
    img = open_image(encode(with_alpha(scene(64, 48)), "WEBP", lossless=True), MAX)
    assert img.mode == "RGBA"
    assert img.getchannel("A").getextrema() == (0, 255)


# --- thumbnails -----------------------------------------------------------------------------------


def test_thumbnail_of_rotated_jpeg() -> None:
    out = thumbnail(jpeg_with_exif(600, 400, orientation=6), 128)
    assert sniff_image_type(out) == "image/jpeg"
    assert not has_metadata(out)
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == (85, 128)


def test_thumbnail_with_alpha_is_png() -> None:
    out = thumbnail(encode(with_alpha(scene(300, 200)), "PNG"), 100)
    with Image.open(io.BytesIO(out)) as img:
        assert img.format == "PNG"
        assert img.mode == "RGBA"
        assert img.size == (100, 67)


def test_thumbnail_never_upscales() -> None:
    out = thumbnail(encode(scene(40, 30), "PNG"), 256)
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == (40, 30)


def test_thumbnail_rejects_corrupt() -> None:
    data = encode(scene(400, 300), "JPEG")
    with pytest.raises(ImageRejected):
        thumbnail(data[:200], 64)


def test_thumbnail_of_16_bit_png() -> None:
    gray = np.linspace(0, 65535, 300 * 200).reshape(200, 300).astype(np.uint16)
    out = thumbnail(encode(Image.fromarray(gray), "PNG"), 64)
    with Image.open(io.BytesIO(out)) as img:
        assert 100 < float(np.asarray(img.convert("L")).mean()) < 155  # a mid-gray average, not white


def test_encoders_drop_an_icc_profile_of_another_colour_space() -> None:
    from PIL import ImageCms

    rgb_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for out in (
        encode_jpeg(scene(32, 32).convert("L"), icc_profile=rgb_icc),
        encode_png(scene(32, 32).convert("L"), icc_profile=rgb_icc),
    ):
        with Image.open(io.BytesIO(out)) as reread:
            assert "icc_profile" not in reread.info


@pytest.mark.parametrize("save", [{}, {"progressive": True}, {"subsampling": 0, "quality": 97}])
@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_truncated_big_jpeg_is_corrupt_at_reduced_scale(save: dict[str, Any], cut: float) -> None:
    """JPEG uploads are checked with the inverse DCT at 1/8 scale; every entropy-coded block is
    still decoded, so truncation anywhere (also near the end) is caught."""
    data = encode(scene(1600, 1200), "JPEG", **save)
    assert inspect_image(data, MAX).width == 1600
    with pytest.raises(ImageRejected) as err:
        inspect_image(data[: int(len(data) * cut)], MAX)
    assert err.value.code == "corrupt_image"


# --- thumbnails through libvips (third pass) ------------------------------------------------------


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.99])
def test_thumbnail_rejects_a_jpeg_truncated_in_its_image_data(cut: float) -> None:
    data = encode(scene(1200, 900), "JPEG")
    with pytest.raises(ImageRejected) as err:
        thumbnail(data[: int(len(data) * cut)], 128)
    assert err.value.code == "corrupt_image"


def test_thumbnail_keeps_only_a_matching_icc_profile() -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = thumbnail(encode(scene(600, 400), "JPEG", icc_profile=icc), 128)
    gray = thumbnail(encode(scene(600, 400).convert("L"), "JPEG", icc_profile=icc), 128)
    alpha = thumbnail(encode(with_alpha(scene(600, 400)), "PNG", icc_profile=icc), 128)
    for out, kept in ((rgb, True), (gray, False), (alpha, True)):
        assert not has_metadata(out)
        with Image.open(io.BytesIO(out)) as img:
            assert ("icc_profile" in img.info) is kept


@pytest.mark.parametrize(
    ("source", "fmt", "mode"),
    [
        (lambda: scene(600, 400).convert("CMYK"), "JPEG", "RGB"),
        (lambda: scene(600, 400).convert("L"), "JPEG", "L"),
        (lambda: scene(600, 400), "WEBP", "RGB"),
        (lambda: with_alpha(scene(600, 400)).convert("LA"), "PNG", "RGBA"),
        (lambda: with_alpha(scene(600, 400)), "WEBP", "RGBA"),
    ],
)
def test_thumbnail_modes_and_colours(source: Any, fmt: str, mode: str) -> None:
    original = source()
    lossless = {"lossless": True} if fmt == "WEBP" else {}  # lossy WebP changes hidden colours
    out = thumbnail(encode(original, fmt, **lossless), 128)
    with Image.open(io.BytesIO(out)) as img:
        assert img.mode == mode and img.size == (128, 85)
        expected = original.convert("RGBA" if mode == "RGBA" else "RGB").resize(
            img.size, Image.Resampling.LANCZOS
        )
        mean_error = np.abs(
            np.asarray(img.convert(expected.mode), float) - np.asarray(expected, float)
        ).mean()
        assert mean_error < 8  # the same picture in the same colours (CMYK: Pillow's plain conversion)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16"])
def test_encode_png_is_lossless(mode: str) -> None:
    source = with_alpha(scene(97, 61))  # odd sizes: no row alignment luck
    img = (
        source.convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.arange(97 * 61, dtype=np.uint16).reshape(61, 97))
    )
    with Image.open(io.BytesIO(encode_png(img))) as back:
        assert back.mode == img.mode and back.size == img.size
        assert np.array_equal(np.asarray(back), np.asarray(img))


@pytest.mark.parametrize("bands", [1, 2, 3, 4])
def test_encode_png_pixels_is_lossless(bands: int) -> None:
    rng = np.random.default_rng(bands)
    pixels = rng.integers(0, 256, (61, 97, bands), dtype=np.uint8)  # odd sizes, noise
    data = encode_png_pixels(pixels if bands > 1 else pixels[:, :, 0])
    assert not has_metadata(data)
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == ("L", "LA", "RGB", "RGBA")[bands - 1] and back.size == (97, 61)
        assert np.array_equal(np.asarray(back).reshape(61, 97, bands), pixels)


def test_encode_png_pixels_keeps_only_a_matching_icc_profile() -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png_pixels(rgba, icc_profile=srgb))) as back:
        assert back.info.get("icc_profile") == srgb
    with Image.open(io.BytesIO(encode_png_pixels(rgba[:, :, 0], icc_profile=srgb))) as back:
        assert "icc_profile" not in back.info  # an RGB profile on a gray image is dropped


def test_encode_png_pixels_rejects_other_arrays() -> None:
    with pytest.raises(ValueError, match="uint8 array"):
        encode_png_pixels(np.zeros((4, 4, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 array"):
        encode_png_pixels(np.zeros((4, 4, 3), dtype=np.uint16))  # type: ignore[arg-type]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_open_image_reduced_applies_every_exif_orientation(orientation: int) -> None:
    data = jpeg_with_exif(800, 480, orientation=orientation)
    full = open_image(data, MAX)
    wanted: list[tuple[int, int]] = []

    def need(width: int, height: int) -> tuple[int, int]:
        wanted.append((width, height))
        return width // 3, height // 3  # 1/2 scale is the smallest at least this large

    reduced, full_size = open_image_reduced(data, MAX, need)
    assert wanted == [full.size]  # called with the oriented size
    assert full_size == full.size
    assert reduced.size == ((full.width + 1) // 2, (full.height + 1) // 2)
    assert not any(k in reduced.info for k in ("exif", "comment", "xmp"))
    # the same picture, the same way up: compare with the full decode brought to the same size
    expected = np.asarray(full.resize(reduced.size, Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(np.asarray(reduced, dtype=np.float32) - expected).mean() < 4
    # ... and not merely a symmetric picture: the other orientations are far off
    flipped = np.asarray(full.transpose(Image.Transpose.ROTATE_180).resize(reduced.size), dtype=np.float32)
    assert np.abs(np.asarray(reduced, dtype=np.float32) - flipped).mean() > 15


@pytest.mark.parametrize(
    ("need", "expected"),
    [
        ((1600, 1200), (2000, 1500)),  # 1/2: the smallest DCT scale that is large enough
        ((500, 375), (500, 375)),  # 1/8
        ((501, 375), (1000, 750)),  # 1/4: one pixel more than 1/8 gives
        ((4000, 3000), (4000, 3000)),
        ((9999, 1), (4000, 3000)),  # never larger than the image
    ],
)
def test_open_image_reduced_picks_the_smallest_large_enough_scale(
    need: tuple[int, int], expected: tuple[int, int]
) -> None:
    data = encode(Image.new("RGB", (4000, 3000), (10, 120, 200)), "JPEG")
    img, full = open_image_reduced(data, MAX, lambda w, h: need)
    assert full == (4000, 3000) and img.size == expected and img.mode == "RGB"


def test_open_image_reduced_decodes_other_formats_fully_and_checks_them() -> None:
    png = encode(with_alpha(scene(200, 100)), "PNG")
    img, full = open_image_reduced(png, MAX, lambda w, h: (20, 10))
    assert img.size == full == (200, 100) and img.mode == "RGBA"
    with pytest.raises(ImageRejected) as exc:
        open_image_reduced(encode(scene(400, 300))[:3000], MAX, lambda w, h: (50, 38))
    assert exc.value.code == "corrupt_image"
    with pytest.raises(ImageRejected) as exc:
        open_image_reduced(encode(scene(400, 300)), 1000, lambda w, h: (50, 38))
    assert exc.value.code == "image_too_large"


# --- open_rgba: JPEG straight into an RGBA array (sixth pass) -------------------------------------


def _pillow_rgba(data: bytes) -> np.ndarray:
    return np.asarray(open_image(data, MAX).convert("RGBA"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_open_rgba_jpeg_is_pillows_decode_the_same_way_up(orientation: int) -> None:
    data = jpeg_with_exif(301, 203, orientation=orientation)  # odd sizes
    rgba = open_rgba(data, MAX)
    assert not rgba.has_alpha and rgba.icc_profile is None
    assert rgba.pixels.flags.c_contiguous and rgba.pixels.flags.writeable
    assert np.array_equal(rgba.pixels, _pillow_rgba(data))  # exact: the same libjpeg-turbo decode


@pytest.mark.parametrize("save", [{"progressive": True}, {"subsampling": 0, "quality": 97}])
def test_open_rgba_other_jpeg_encodings_and_gray(save: dict[str, Any]) -> None:
    for img in (scene(160, 120), scene(160, 120).convert("L")):
        data = encode(img, "JPEG", **save)
        assert np.array_equal(open_rgba(data, MAX).pixels, _pillow_rgba(data))


@pytest.mark.parametrize("orientation", [1, 6])
def test_open_rgba_decodes_into_a_given_buffer_that_fits(orientation: int) -> None:
    data = jpeg_with_exif(301, 203, orientation=orientation)
    expected = _pillow_rgba(data)
    big = np.full(301 * 203 * 4 + 100, 7, dtype=np.uint8)  # bigger than needed: its start is used
    rgba = open_rgba(data, MAX, buffer=lambda nbytes: big)
    assert np.array_equal(rgba.pixels, expected)
    assert np.shares_memory(rgba.pixels, big) == (orientation == 1)  # a turned image is a new array
    small = np.full(301 * 203 * 4 - 1, 7, dtype=np.uint8)
    rgba = open_rgba(data, MAX, buffer=lambda nbytes: small)
    assert np.array_equal(rgba.pixels, expected) and not np.shares_memory(rgba.pixels, small)
    assert (small == 7).all()


def test_open_rgba_keeps_the_icc_profile_and_nothing_else() -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    data = encode(scene(64, 48), "JPEG", icc_profile=icc, exif=exif.tobytes())
    rgba = open_rgba(data, MAX)
    assert rgba.icc_profile == icc
    assert not has_metadata(encode_png_pixels(rgba.pixels, icc_profile=rgba.icc_profile))


def test_open_rgba_other_formats_through_pillow() -> None:
    src = with_alpha(scene(120, 90))
    for data in (encode(src, "PNG"), encode(src, "WEBP", lossless=True, exact=True)):
        rgba = open_rgba(data, MAX)
        assert rgba.has_alpha
        assert np.array_equal(rgba.pixels, np.asarray(src))
    cmyk = encode(scene(80, 60).convert("CMYK"), "JPEG")
    rgba = open_rgba(cmyk, MAX)
    assert not rgba.has_alpha and np.array_equal(rgba.pixels, _pillow_rgba(cmyk))


def test_open_rgba_hands_a_jpeg_turbojpeg_refuses_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    import simplejpeg

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("tjDecompressHeader3(): Could not determine subsampling level of JPEG image")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", refuse)
    data = jpeg_with_exif(90, 60, orientation=6)
    assert np.array_equal(open_rgba(data, MAX).pixels, _pillow_rgba(data))


@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_open_rgba_rejects_truncated_and_too_large_jpegs(cut: float) -> None:
    data = encode(scene(800, 600), "JPEG")
    with pytest.raises(ImageRejected) as err:
        open_rgba(data[: int(len(data) * cut)], MAX)
    assert err.value.code == "corrupt_image"
    with pytest.raises(ImageRejected) as err:
        open_rgba(data, 1000)
    assert err.value.code == "image_too_large"
