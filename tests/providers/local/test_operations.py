"""The pool-side operations, run in-process with the real models (no pool, so fast)."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from darkroom.imaging import ImageRejected, open_image
from darkroom.providers.base import OutputImage
from darkroom.providers.local import STYLE_NAMES, operations
from darkroom.providers.local.enhance import ENHANCEMENTS
from tests.fixtures.photos import encode, has_metadata, jpeg_with_exif, photo_bytes, scene, with_alpha

MAX = 50_000_000


def decode(out: OutputImage) -> Image.Image:
    img = Image.open(io.BytesIO(out.data))
    img.load()
    assert img.size == (out.width, out.height)
    assert img.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[out.content_type]
    return img


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float32)
    y = np.asarray(b.convert("RGB"), dtype=np.float32)
    return float(np.abs(x - y).mean())


# --- background removal ---------------------------------------------------------------------------


def test_background_removal_gives_rgba_with_real_mask() -> None:
    out = operations.remove_background(photo_bytes(480, 360), max_pixels=MAX)
    img = decode(out)
    assert out.content_type == "image/png"
    assert img.mode == "RGBA"
    assert img.size == (480, 360)
    alpha = np.asarray(img.getchannel("A"))
    assert (alpha < 10).mean() > 0.2  # plenty of background removed
    assert (alpha > 245).mean() > 0.02  # and a subject kept


def test_background_removal_white_and_post_process() -> None:
    out = operations.remove_background(
        photo_bytes(320, 240), max_pixels=MAX, background="white", post_process=True
    )
    img = decode(out)
    assert img.mode == "RGB"
    assert img.size == (320, 240)
    # background pixels became pure white
    assert (np.asarray(img).min(axis=2) == 255).mean() > 0.2


def test_background_removal_combines_existing_alpha() -> None:
    src = with_alpha(scene(320, 240))
    img = decode(operations.remove_background(encode(src, "PNG"), max_pixels=MAX))
    alpha = np.asarray(img.getchannel("A"))
    assert alpha[:, : 320 // 4].max() == 0  # transparent input stays transparent
    assert not np.asarray(img)[:, : 320 // 4].any()  # ... and keeps none of its hidden colour


@pytest.mark.parametrize("orientation", [3, 6])
def test_background_removal_of_a_rotated_jpeg_keeps_the_photo_where_it_shows(orientation: int) -> None:
    data = jpeg_with_exif(400, 300, orientation=orientation)
    rgba = np.asarray(decode(operations.remove_background(data, max_pixels=MAX)))
    photo = np.asarray(open_image(data, MAX))
    assert rgba.shape[:2] == photo.shape[:2]
    visible = rgba[:, :, 3] > 0
    assert 0.02 < visible.mean() < 0.98
    assert np.array_equal(rgba[visible][:, :3], photo[visible])
    assert not rgba[~visible].any()


def _rembg_mask(rgb: Image.Image) -> np.ndarray:
    """The mask as rembg (and this provider before OpenCV resampling) made it: Lanczos both ways."""
    from darkroom.providers.local import models

    small = rgb.resize((320, 320), Image.Resampling.LANCZOS, reducing_gap=3.0)
    px = np.asarray(small, dtype=np.float32)
    px = px / np.float32(max(float(px.max()), 1.0))
    px = (px - np.array(operations.U2NET_MEAN, np.float32)) / np.array(operations.U2NET_STD, np.float32)
    session = models.u2netp_session()
    x = np.ascontiguousarray(px.transpose(2, 0, 1)[None], dtype=np.float32)
    raw = session.run(None, {session.get_inputs()[0].name: x})[0][0, 0]
    pred = (raw - raw.min()) / (raw.max() - raw.min())
    mask = Image.fromarray(np.clip(pred * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(mask.resize(rgb.size, Image.Resampling.LANCZOS), dtype=np.float32)


@pytest.mark.parametrize(("width", "height"), [(1600, 1200), (500, 700)])
def test_background_removal_mask_matches_rembgs_resampling(width: int, height: int) -> None:
    data = photo_bytes(width, height, seed=4)
    img = decode(operations.remove_background(data, max_pixels=MAX))
    alpha = np.asarray(img.getchannel("A"), dtype=np.float32)
    reference = _rembg_mask(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(alpha - reference).mean() < 3  # the same cut-out, edges a little softer/sharper
    assert ((alpha > 127) == (reference > 127)).mean() > 0.99
    # the photo's own pixels where anything shows, nothing of it where nothing does
    rgb, photo = np.asarray(img.convert("RGB")), np.asarray(Image.open(io.BytesIO(data)))
    visible = alpha > 0
    assert np.array_equal(rgb[visible], photo[visible])
    assert not rgb[~visible].any()


# --- style transfer -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_style_transfer_same_size_and_different(fmt: str) -> None:
    src = scene(333, 250)
    out = operations.stylize(encode(src, fmt), max_pixels=MAX, style="rust_oil")
    img = decode(out)
    assert img.size == (333, 250)
    assert out.content_type == ("image/jpeg" if fmt == "JPEG" else "image/png")
    assert mean_abs_diff(img, src) > 15


def test_every_builtin_style_runs_and_styles_differ() -> None:
    data = photo_bytes(96, 72)
    renders = {
        name: np.asarray(decode(operations.stylize(data, max_pixels=MAX, style=name)), dtype=np.float32)
        for name in STYLE_NAMES
    }
    assert all(r.shape == (72, 96, 3) for r in renders.values())
    names = list(renders)
    for a, b in itertools.pairwise(names):
        assert np.abs(renders[a] - renders[b]).mean() > 2, (a, b)


def test_style_transfer_strength_and_preserve_color() -> None:
    src = scene(200, 150)
    data = encode(src, "PNG")
    full = decode(operations.stylize(data, max_pixels=MAX, style="scarlet_shards"))
    half = decode(operations.stylize(data, max_pixels=MAX, style="scarlet_shards", strength=0.5))
    none = decode(operations.stylize(data, max_pixels=MAX, style="scarlet_shards", strength=0.0))
    kept = decode(operations.stylize(data, max_pixels=MAX, style="scarlet_shards", preserve_color=True))
    assert mean_abs_diff(none, src) < 1
    assert mean_abs_diff(half, src) < mean_abs_diff(full, src)
    # preserve_color keeps the chroma of the photo: closer in colour than the plain stylization
    src_cb = np.asarray(src.convert("YCbCr"))[..., 1:].astype(float)
    kept_cb = np.asarray(kept.convert("YCbCr"))[..., 1:].astype(float)
    full_cb = np.asarray(full.convert("YCbCr"))[..., 1:].astype(float)
    assert np.abs(kept_cb - src_cb).mean() < np.abs(full_cb - src_cb).mean()


def test_style_transfer_large_input_is_capped_then_restored() -> None:
    src = scene(2000, 300)  # rendered at 1600x240, returned at 2000x300
    img = decode(operations.stylize(encode(src), max_pixels=MAX, style="blue_impasto"))
    assert img.size == (2000, 300)


def test_style_image_mode() -> None:
    photo = scene(300, 200)
    style = scene(150, 150, seed=7).rotate(40).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = operations.stylize(encode(photo), max_pixels=MAX, style="ignored", style_image=encode(style, "PNG"))
    img = decode(out)
    assert img.size == (300, 200)
    assert mean_abs_diff(img, photo) > 10


def test_style_transfer_keeps_alpha() -> None:
    img = decode(
        operations.stylize(encode(with_alpha(scene(200, 100)), "PNG"), max_pixels=MAX, style="pastel_pop")
    )
    assert img.mode == "RGBA"
    assert img.getchannel("A").getextrema() == (0, 255)


def test_style_transfer_rejects_tiny_images() -> None:
    with pytest.raises(operations.OperationInputError):
        operations.stylize(photo_bytes(200, 20), max_pixels=MAX, style="rust_oil")


def test_unknown_style_in_worker() -> None:
    with pytest.raises(operations.OperationInputError):
        operations.stylize(photo_bytes(64, 64), max_pixels=MAX, style="nope")


# --- colour enhancement ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ENHANCEMENTS))
def test_every_enhancement_changes_the_photo(name: str) -> None:
    src = scene(320, 240)
    out = operations.enhance_color(encode(src, "PNG"), max_pixels=MAX, enhancement=name)
    img = decode(out)
    assert out.content_type == "image/png"
    assert img.size == (320, 240)
    assert mean_abs_diff(img, src) > 3, name
    weak = decode(
        operations.enhance_color(encode(src, "PNG"), max_pixels=MAX, enhancement=name, strength=0.3)
    )
    assert 0 < mean_abs_diff(weak, src) < mean_abs_diff(img, src)


def test_black_and_white_is_gray() -> None:
    img = decode(operations.enhance_color(photo_bytes(), max_pixels=MAX, enhancement="black_and_white"))
    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert np.abs(arr[..., 0] - arr[..., 2]).max() <= 3


def test_enhancement_formats() -> None:
    assert (
        operations.enhance_color(photo_bytes(), max_pixels=MAX, enhancement="vivid").content_type
        == "image/jpeg"
    )
    webp = encode(with_alpha(scene(200, 100)), "WEBP", lossless=True)
    out = operations.enhance_color(webp, max_pixels=MAX, enhancement="warm")
    img = decode(out)
    assert out.content_type == "image/png"
    assert img.mode == "RGBA"
    assert img.getchannel("A").getextrema() == (0, 255)
    bw = decode(operations.enhance_color(webp, max_pixels=MAX, enhancement="black_and_white"))
    assert bw.mode == "LA"


# --- EXIF and metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_type", "params"),
    [
        ("background_removal", {}),
        ("style_transfer", {"style": "moody_dusk"}),
        ("color_enhancement", {"enhancement": "vintage"}),
    ],
)
def test_exif_orientation_applied_and_metadata_stripped(task_type: str, params: dict[str, str]) -> None:
    data = jpeg_with_exif(300, 200, orientation=6)
    assert has_metadata(data)
    out = operations.run_operation(task_type, data, params, max_pixels=MAX)
    assert (out.width, out.height) == (200, 300)
    assert not has_metadata(out.data)
    with Image.open(io.BytesIO(out.data)) as img:
        assert len(img.getexif()) == 0
        assert img.size == (200, 300)


def test_corrupt_input_raises_image_rejected() -> None:
    data = photo_bytes()
    with pytest.raises(ImageRejected) as err:
        operations.run_operation("color_enhancement", data[:300], {"enhancement": "auto"}, max_pixels=MAX)
    assert err.value.code == "corrupt_image"


def test_input_from_a_file_gives_the_same_result(tmp_path: Path) -> None:
    """The provider sends a stored input's path when it has one; the worker reads the file."""
    data = photo_bytes(160, 120, seed=3)
    (tmp_path / "in.jpg").write_bytes(data)
    from_file = operations.run_operation("background_removal", tmp_path / "in.jpg", {}, max_pixels=MAX)
    from_bytes = operations.run_operation("background_removal", data, {}, max_pixels=MAX)
    assert isinstance(from_file, OutputImage) and isinstance(from_bytes, OutputImage)
    assert from_file.data == from_bytes.data


def test_input_file_gone_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(operations.OperationInputError, match="no longer in storage"):
        operations.run_operation("color_enhancement", tmp_path / "deleted.jpg", {}, max_pixels=MAX)


def test_unknown_task_type() -> None:
    with pytest.raises(operations.OperationInputError):
        operations.run_operation("upscale", photo_bytes(), {}, max_pixels=MAX)


def test_16_bit_png_is_scaled_not_clipped() -> None:
    gray = np.asarray(scene(200, 150).convert("L"), dtype=np.uint16) * 257
    data = encode(Image.fromarray(gray), "PNG")
    img = decode(operations.enhance_color(data, max_pixels=MAX, enhancement="warm", strength=0.0))
    assert abs(float(np.asarray(img.convert("L")).mean()) - float(gray.mean()) / 257) < 3


def test_corrupt_style_image_is_named() -> None:
    with pytest.raises(ImageRejected, match="Style image"):
        operations.stylize(
            photo_bytes(64, 64), max_pixels=MAX, style="rust_oil", style_image=b"\x89PNG\r\n\x1a\n!"
        )


def test_background_removal_reuses_its_decode_buffer_without_leaking_pixels() -> None:
    """The decode buffer kept between calls gives the same output as a fresh one, whatever the
    previous image was (bigger, smaller, rotated)."""
    inputs = [
        photo_bytes(640, 480, seed=1),
        photo_bytes(320, 200, seed=2),
        jpeg_with_exif(300, 400, orientation=6),
    ]
    fresh = []
    for data in inputs:
        operations._spare.clear()
        fresh.append(operations.remove_background(data, max_pixels=MAX).data)
    operations._spare.clear()
    for data, expected in zip(inputs, fresh, strict=True):
        assert operations.remove_background(data, max_pixels=MAX).data == expected
        assert len(operations._spare) == 1
    assert operations._spare[0].nbytes >= 640 * 480 * 4  # the biggest buffer so far is kept


def test_background_removal_keeps_no_buffer_over_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations, "SPARE_MAX_BYTES", 100 * 100 * 4)
    operations._spare.clear()
    operations.remove_background(photo_bytes(320, 240), max_pixels=MAX)
    assert not operations._spare
    operations.remove_background(photo_bytes(100, 80), max_pixels=MAX)
    assert len(operations._spare) == 1 and operations._spare[0].nbytes == 100 * 80 * 4
