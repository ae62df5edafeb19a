"""darkroom.png, our PNG writer: checked against three independent readers (Pillow, libvips, and
a reading by hand with the standard library's zlib and numpy)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import pyvips
from PIL import Image

from darkroom import png

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def noise(height: int, width: int, bands: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, bands), dtype=np.uint8)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk; every CRC checked."""
    assert data[:8] == png.SIGNATURE
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        out.append((kind, payload))
        pos += 12 + length
    assert pos == len(data)
    return out


def by_hand(data: bytes) -> np.ndarray:
    """Decode with zlib and numpy only: IHDR, the concatenated IDATs, the five row filters."""
    parsed = chunks(data)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", parsed[0][1])
    assert (depth, interlace) == (8, 0)
    bands = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    raw = zlib.decompress(b"".join(p for k, p in parsed if k == b"IDAT"))
    stride = width * bands
    assert len(raw) == height * (stride + 1)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        assert kind == 2  # up, on every row
        out[y] = line + prior  # uint8: mod 256
        prior = out[y]
    return out.reshape(height, width, bands)


@pytest.mark.parametrize("bands", [1, 2, 3, 4])
@pytest.mark.parametrize(
    ("height", "width"),
    [(1, 1), (1, 257), (300, 1), (3, 5), (61, 97), (64, 33), (65, 33), (129, 70)],  # around BAND_ROWS
)
def test_round_trip_through_three_readers(bands: int, height: int, width: int) -> None:
    pixels = noise(height, width, bands, seed=height * width + bands)
    data = png.encode(pixels)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == MODES[bands] and img.size == (width, height)
        assert np.array_equal(np.asarray(img).reshape(height, width, bands), pixels)
    vimg = pyvips.Image.new_from_buffer(data, "", fail=True)
    assert (vimg.width, vimg.height, vimg.bands) == (width, height, bands)
    vpixels = np.frombuffer(vimg.write_to_memory(), dtype=np.uint8).reshape(height, width, bands)
    assert np.array_equal(vpixels, pixels)
    assert np.array_equal(by_hand(data), pixels)


def test_only_the_needed_chunks_are_written() -> None:
    data = png.encode(noise(20, 30, 4))
    assert [kind for kind, _ in chunks(data)] == [b"IHDR", b"IDAT", b"IEND"]
    assert chunks(data)[0][1] == struct.pack(">IIBBBBB", 30, 20, 8, 6, 0, 0, 0)


def test_icc_profile_is_written_as_iccp() -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = png.encode(noise(8, 8, 3), icc_profile=srgb)
    assert [kind for kind, _ in chunks(data)] == [b"IHDR", b"iCCP", b"IDAT", b"IEND"]
    with Image.open(io.BytesIO(data)) as img:
        assert img.info["icc_profile"] == srgb
    assert pyvips.Image.new_from_buffer(data, "").get("icc-profile-data") == srgb


def test_image_data_split_over_many_idat_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(png, "IDAT_SIZE", 1000)
    pixels = noise(90, 70, 4)
    data = png.encode(pixels)
    idats = [payload for kind, payload in chunks(data) if kind == b"IDAT"]
    assert len(idats) > 10 and all(len(p) <= 1000 for p in idats)
    with Image.open(io.BytesIO(data)) as img:
        assert np.array_equal(np.asarray(img), pixels)
    assert np.array_equal(by_hand(data), pixels)


def test_large_photo_like_image_and_views() -> None:
    """A smooth 12 MP-like picture (compresses, unlike noise), given as a non-contiguous view."""
    y, x = np.mgrid[0:1500, 0:2000]
    base = np.stack([(x // 7) % 256, (y // 5) % 256, (x + y) % 256, np.full_like(x, 255)], axis=2)
    pixels = base.astype(np.uint8)[:, ::-1]  # mirrored: negative strides
    data = png.encode(pixels)
    assert len(data) < pixels.nbytes / 10
    with Image.open(io.BytesIO(data)) as img:
        assert np.array_equal(np.asarray(img), pixels)


def test_gray_as_two_dimensional_array() -> None:
    pixels = noise(7, 9, 1)[:, :, 0]
    with Image.open(io.BytesIO(png.encode(pixels))) as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), pixels)


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((4, 4, 5), dtype=np.uint8),
        np.zeros((4, 4, 3), dtype=np.uint16),
        np.zeros((4,), dtype=np.uint8),
        np.zeros((0, 4, 3), dtype=np.uint8),
        np.zeros((4, 0), dtype=np.uint8),
    ],
)
def test_rejects_what_it_cannot_write(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"uint8 array|at least one pixel"):
        png.encode(pixels)
