"""darkroom.png, our PNG writer: checked against three independent readers (Pillow, libvips, and
a reading by hand with the standard library's zlib and numpy)."""

from __future__ import annotations

import io
import struct
import threading
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


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("bands", [1, 2, 3, 4])
@pytest.mark.parametrize(
    ("height", "width"),
    [(1, 1), (1, 257), (300, 1), (3, 5), (61, 97), (64, 33), (65, 33), (129, 70)],  # around BAND_ROWS
)
def test_round_trip_through_three_readers(bands: int, height: int, width: int, threads: int) -> None:
    pixels = noise(height, width, bands, seed=height * width + bands)
    data = png.encode(pixels, threads=threads)
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


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("idat_size", [1000, 4096, 1 << 22])
def test_image_data_split_over_many_idat_chunks(
    monkeypatch: pytest.MonkeyPatch, threads: int, idat_size: int
) -> None:
    """IDAT chunks are cut from the strips' pieces wherever the size limit falls."""
    monkeypatch.setattr(png, "IDAT_SIZE", idat_size)
    pixels = noise(90, 70, 4)
    data = png.encode(pixels, threads=threads)
    idats = [payload for kind, payload in chunks(data) if kind == b"IDAT"]
    assert all(len(p) <= idat_size for p in idats)
    assert all(len(p) == idat_size for p in idats[:-1]) and idats[-1]
    assert len(idats) == -(-sum(map(len, idats)) // idat_size)
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


@pytest.mark.parametrize("threads", [2, 3, 4])
@pytest.mark.parametrize("height", [2, 63, 64, 65, 200, 777])
def test_strips_in_threads_are_one_zlib_stream(threads: int, height: int) -> None:
    """The strips compressed in threads join into one valid zlib stream (its Adler-32 and end
    checked by the standard library's zlib), with runs of zeros as in a cut-out."""
    pixels = noise(height, 45, 4, seed=height)
    pixels[height // 3 : height // 2] = 0
    data = png.encode(pixels, threads=threads)
    assert np.array_equal(by_hand(data), pixels)
    stream = b"".join(p for k, p in chunks(data) if k == b"IDAT")
    decompressor = zlib.decompressobj()
    decompressor.decompress(stream)
    assert decompressor.eof and not decompressor.unused_data


def test_large_image_is_split_into_strips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(png, "_available_cpus", lambda: 2)
    pixels = noise(1100, 1000, 4)  # 4.4 MB: over PARALLEL_MIN_BYTES
    assert pixels.nbytes >= png.PARALLEL_MIN_BYTES
    seen: set[str] = set()
    real = png._strip

    def strip(*args: object, **kwargs: object) -> object:
        seen.add(threading.current_thread().name)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(png, "_strip", strip)
    data = png.encode(pixels)
    assert len(seen) == 2
    assert np.array_equal(by_hand(data), pixels)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("height", [1, 2, 64, 65, 130, 301])
def test_prepare_makes_every_row_final_before_it_is_read(threads: int, height: int) -> None:
    """``prepare`` is called once for every row, before any read of it (also as the row above
    the next one, in another strip); the PNG holds the prepared pixels."""
    final = noise(height, 31, 4, seed=height + threads)
    pixels = np.full_like(final, 77)  # what the rows hold before they are prepared
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def prepare(top: int, bottom: int) -> None:
        assert 0 <= top < bottom <= height
        with lock:
            calls.append((top, bottom))
        pixels[top:bottom] = final[top:bottom]

    data = png.encode(pixels, prepare=prepare, threads=threads)
    assert np.array_equal(by_hand(data), final)
    covered = sorted(row for top, bottom in calls for row in range(top, bottom))
    assert covered == list(range(height))


def test_prepare_needs_a_contiguous_array() -> None:
    with pytest.raises(ValueError, match="C-contiguous"):
        png.encode(noise(8, 8, 4)[:, ::-1], prepare=lambda top, bottom: None)


def test_a_failing_prepare_is_raised_after_the_other_threads_stop() -> None:
    pixels = noise(400, 20, 4)

    def prepare(top: int, bottom: int) -> None:
        if top >= 200 and bottom - top > 1:  # a band in a strip, not a strip's last row
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        png.encode(pixels, prepare=prepare, threads=2)


@pytest.mark.parametrize(("first", "second"), [(0, 0), (1, 5), (5, 1), (70_000, 130_000), (3, 200_000)])
def test_adler32_combine(first: int, second: int) -> None:
    rng = np.random.default_rng(first + second)
    a = rng.integers(0, 256, first, dtype=np.uint8).tobytes()
    b = rng.integers(0, 256, second, dtype=np.uint8).tobytes()
    assert png._adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)
