"""The upload's structural check (darkroom.image_structure via imaging.check_upload).

Each refusal case here passes a full decode's *header* parse (Pillow opens it) or differs from a
valid file in one place, so these tests fail if the structure check is removed."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from darkroom.imaging import ImageRejected, check_upload, check_upload_file, open_image
from tests.fixtures.photos import encode, scene, with_alpha

MAX = 50_000_000


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _rejected(data: bytes) -> str:
    with pytest.raises(ImageRejected) as err:
        check_upload(data, MAX)
    assert err.value.message
    return err.value.code


def _gray16() -> Image.Image:
    return Image.fromarray(np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16))


VALID: list[tuple[str, bytes]] = [
    ("jpeg baseline", encode(scene(400, 300), "JPEG")),
    ("jpeg progressive", encode(scene(400, 300), "JPEG", progressive=True)),
    ("jpeg 4:4:4", encode(scene(400, 300), "JPEG", subsampling=0, quality=97)),
    ("jpeg gray", encode(scene(400, 300).convert("L"), "JPEG")),
    ("jpeg cmyk", encode(scene(400, 300).convert("CMYK"), "JPEG")),
    ("jpeg restart markers", encode(scene(400, 300), "JPEG", restart_marker_blocks=4)),
    ("png rgb", encode(scene(400, 300), "PNG")),
    ("png rgba", encode(with_alpha(scene(400, 300)), "PNG")),
    ("png palette", encode(scene(400, 300).convert("P"), "PNG")),
    ("png 16-bit gray", encode(_gray16(), "PNG")),
    ("webp lossy", encode(scene(400, 300), "WEBP")),
    ("webp lossless alpha", encode(with_alpha(scene(400, 300)), "WEBP", lossless=True)),
    ("webp lossy alpha", encode(with_alpha(scene(400, 300)), "WEBP", quality=80)),
]


@pytest.mark.parametrize("data", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_images_pass(data: bytes) -> None:
    info = check_upload(data, MAX)
    with Image.open(io.BytesIO(data)) as img:
        assert (info.width, info.height) == img.size


def test_animated_webp_passes() -> None:
    frames = [scene(64, 48, seed=i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    assert check_upload(buf.getvalue(), MAX).width == 64


@pytest.mark.parametrize("data", [v[1] for v in VALID], ids=[v[0] for v in VALID])
@pytest.mark.parametrize("cut", [0.05, 0.3, 0.5, 0.9, 0.99, -1, -2])
def test_truncated_anywhere_is_corrupt(data: bytes, cut: float) -> None:
    end = int(len(data) * cut) if cut > 0 else len(data) + int(cut)
    assert _rejected(data[:end]) in ("corrupt_image", "unsupported_image_type")


def test_bytes_after_the_end_marker_are_allowed() -> None:
    """Cameras append data after EOI (MPF second pictures, motion photos); decoders ignore it."""
    check_upload(encode(scene(64, 48), "JPEG") + b"\xff\xd8more pictures" * 10, MAX)
    check_upload(encode(scene(64, 48), "PNG") + b"trailing", MAX)


# --- JPEG -----------------------------------------------------------------------------------------


def test_jpeg_missing_eoi() -> None:
    data = encode(scene(400, 300), "JPEG")
    assert data.endswith(b"\xff\xd9")
    assert _rejected(data[:-2]) == "corrupt_image"
    assert _rejected(data[:-2] + b"\x00\x00") == "corrupt_image"


def test_jpeg_garbage_after_the_header() -> None:
    data = encode(scene(400, 300), "JPEG")
    sos = data.index(b"\xff\xda")
    assert _rejected(data[:sos] + b"garbage, not a marker" * 50) == "corrupt_image"


@pytest.mark.parametrize("marker", [b"\xff\xd8", b"\xff\x01", b"\xff\x02", b"\xff\xd3"])
def test_jpeg_impossible_marker_between_segments(marker: bytes) -> None:
    data = encode(scene(400, 300), "JPEG")
    sos = data.index(b"\xff\xda")
    assert _rejected(data[:sos] + marker + b"\x00\x04ab" + data[sos:]) == "corrupt_image"


def test_jpeg_impossible_marker_after_a_scan() -> None:
    data = encode(scene(400, 300), "JPEG")  # baseline: one scan, then EOI
    assert _rejected(data[:-2] + b"\xff\xd8\xff\xd9") == "corrupt_image"


def test_jpeg_segment_running_past_the_end() -> None:
    data = bytearray(encode(scene(400, 300), "JPEG"))
    dqt = data.index(b"\xff\xdb")
    struct.pack_into(">H", data, dqt + 2, 0xFFF0)
    assert _rejected(bytes(data)) == "corrupt_image"


def test_jpeg_second_frame_header() -> None:
    data = encode(scene(400, 300), "JPEG")
    sof = data.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", data, sof + 2)
    segment = data[sof : sof + 2 + length]
    assert _rejected(data[: sof + 2 + length] + segment + data[sof + 2 + length :]) == "corrupt_image"


def test_jpeg_scan_before_frame_header() -> None:
    data = encode(scene(400, 300), "JPEG")
    sof = data.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", data, sof + 2)
    assert _rejected(data[:sof] + data[sof + 2 + length :]) == "corrupt_image"


# --- PNG ------------------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        out.append((pos, kind))
        pos += 12 + length
    return out


@pytest.mark.parametrize("which", [b"IHDR", b"IDAT", b"IEND"])
def test_png_bad_crc(which: bytes) -> None:
    data = bytearray(encode(scene(400, 300), "PNG"))
    pos = next(p for p, kind in _png_chunks(bytes(data)) if kind == which)
    (length,) = struct.unpack_from(">I", data, pos)
    data[pos + 8 + length] ^= 0x01  # first CRC byte
    assert _rejected(bytes(data)) == "corrupt_image"


def test_png_flipped_bit_in_image_data_is_caught_by_the_crc() -> None:
    data = bytearray(encode(scene(400, 300), "PNG"))
    pos = next(p for p, kind in _png_chunks(bytes(data)) if kind == b"IDAT")
    data[pos + 8 + 100] ^= 0x10
    assert _rejected(bytes(data)) == "corrupt_image"


def test_png_missing_iend() -> None:
    data = encode(scene(400, 300), "PNG")
    assert data[-12:] == _chunk(b"IEND", b"")
    assert _rejected(data[:-12]) == "corrupt_image"


def test_png_garbage_after_the_header() -> None:
    data = encode(scene(400, 300), "PNG")
    assert _rejected(data[: 8 + 25] + b"garbage, not a chunk" * 50) == "corrupt_image"


@pytest.mark.parametrize(
    ("label", "ihdr"),
    [
        ("zero width", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)),
        ("bad depth", struct.pack(">IIBBBBB", 10, 10, 7, 2, 0, 0, 0)),
        ("bad colour type", struct.pack(">IIBBBBB", 10, 10, 8, 5, 0, 0, 0)),
        ("bad interlace", struct.pack(">IIBBBBB", 10, 10, 8, 2, 0, 0, 2)),
    ],
)
def test_png_invalid_header(label: str, ihdr: bytes) -> None:
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 40))
    assert _rejected(data + _chunk(b"IEND", b"")) == "corrupt_image"


def test_png_structure_errors() -> None:
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 10, 8, 2, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\0" * 310))
    iend = _chunk(b"IEND", b"")
    sig = b"\x89PNG\r\n\x1a\n"
    assert check_upload(sig + ihdr + idat + iend, MAX).width == 10
    for broken in (
        sig + ihdr + iend,  # no image data
        sig + ihdr + idat + _chunk(b"tEXt", b"a\0b") + idat + iend,  # IDATs not consecutive
        sig + ihdr + _chunk(b"IDAT", b"not zlib at all") + iend,  # IDAT does not start a zlib stream
        sig + ihdr + _chunk(b"ABCD", b"x") + idat + iend,  # unknown critical chunk
        sig + ihdr + idat + _chunk(b"IEND", b"x"),  # IEND not empty
    ):
        assert _rejected(broken) == "corrupt_image"


def test_png_that_passes_the_structure_check_but_not_the_decode() -> None:
    """The trade-off of checking structure only: a well-formed file whose compressed data is too
    short for its rows is accepted at upload and refused by the decode in the provider."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    assert check_upload(data, MAX).width == 64
    with pytest.raises(ImageRejected) as err:
        open_image(data, MAX)
    assert err.value.code == "corrupt_image"


def test_pixel_limit_still_comes_from_the_header() -> None:
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    with pytest.raises(ImageRejected) as err:
        check_upload(data, MAX)
    assert err.value.code == "image_too_large"


# --- WebP -----------------------------------------------------------------------------------------


def test_webp_riff_size_larger_than_the_file() -> None:
    data = bytearray(encode(scene(400, 300), "WEBP"))
    struct.pack_into("<I", data, 4, len(data) + 100)
    assert _rejected(bytes(data)) == "corrupt_image"


def test_webp_garbage_after_the_header() -> None:
    data = encode(scene(400, 300), "WEBP")
    garbage = b"garbage!" * 20
    riff = b"RIFF" + struct.pack("<I", 4 + len(garbage)) + b"WEBP" + garbage
    assert _rejected(riff) == "corrupt_image"
    bad_vp8 = bytearray(data)
    bad_vp8[20 + 3 : 20 + 6] = b"\x00\x00\x00"  # the VP8 start code
    assert _rejected(bytes(bad_vp8)) == "corrupt_image"


def test_webp_chunk_running_past_the_riff_data() -> None:
    data = bytearray(encode(scene(400, 300), "WEBP"))
    struct.pack_into("<I", data, 16, len(data))  # the first chunk's size
    assert _rejected(bytes(data)) == "corrupt_image"


def test_webp_extended_header_without_image_data() -> None:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + b"\x3f\x00\x00\x2f\x00\x00"
    riff = b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    assert _rejected(riff) == "corrupt_image"


def test_too_many_segments_are_refused() -> None:
    """A crafted file of tiny segments must not keep the check looping for seconds."""
    from darkroom.image_structure import MAX_SEGMENTS

    jpeg = encode(scene(64, 48), "JPEG")
    comments = b"\xff\xfe\x00\x02" * (MAX_SEGMENTS + 1)
    assert _rejected(jpeg[:2] + comments + jpeg[2:]) == "corrupt_image"
    check_upload(jpeg[:2] + b"\xff\xfe\x00\x02" * 1000 + jpeg[2:], MAX)
    png = encode(scene(64, 48), "PNG")
    texts = _chunk(b"tEXt", b"") * (MAX_SEGMENTS + 1)
    assert _rejected(png[:33] + texts + png[33:]) == "corrupt_image"


@pytest.mark.parametrize("data", [v[1] for v in VALID], ids=[v[0] for v in VALID])
@pytest.mark.parametrize("cut", [None, 0.5, -2])
def test_a_file_is_checked_in_place_like_bytes(data: bytes, cut: float | None, tmp_path: Path) -> None:
    """check_upload_file (an upload streamed to disk, mapped) decides exactly as check_upload."""
    if cut is not None:
        data = data[: int(len(data) * cut) if cut > 0 else len(data) + int(cut)]
    path = tmp_path / "upload"
    path.write_bytes(data)
    try:
        expected: object = check_upload(data, MAX)
    except ImageRejected as exc:
        expected = exc.code
    try:
        got: object = check_upload_file(path, MAX)
    except ImageRejected as exc:
        got = exc.code
    assert got == expected
    path.unlink()


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ImageRejected) as err:
        check_upload_file(tmp_path / "empty", MAX)
    assert err.value.code == "empty_file"


def test_the_marker_scan_in_windows_finds_what_one_pass_finds() -> None:
    """The JPEG marker scan runs in 1 MiB windows; markers split across a window edge count."""
    from darkroom import image_structure

    rng = np.random.default_rng(7)
    data = bytearray(rng.integers(0, 256, 3 * 2**20 + 5, dtype=np.uint8).tobytes())
    for edge in (2**20, 2 * 2**20, 3 * 2**20):
        data[edge - 1], data[edge] = 0xFF, 0xD9  # 0xFF the last byte of a window, its marker the next
        data[edge + 1], data[edge + 2] = 0xFF, 0x00  # a stuffed zero right after the edge
    arr = np.frombuffer(bytes(data), dtype=np.uint8)
    ff = np.flatnonzero(arr[:-1] == 0xFF)
    following = arr[ff + 1]
    expected = ff[(following != 0x00) & (following != 0xFF) & ((following < 0xD0) | (following > 0xD7))]
    got = image_structure._jpeg_markers(bytes(data))
    assert np.array_equal(got, expected)
    assert {2**20 - 1, 2 * 2**20 - 1, 3 * 2**20 - 1} <= set(got.tolist())


@pytest.mark.parametrize("length", [2, 3, 8, 9, 15, 16, 17, 4097, 65_537])
@pytest.mark.parametrize("density", [0.0, 0.002, 0.3, 1.0])
def test_the_marker_scan_by_words_finds_what_a_byte_scan_finds(length: int, density: float) -> None:
    """The scan finds the 8-byte words holding a 0xFF first, then the bytes in them: every 0xFF
    is still seen, at a word's edges, in a tail shorter than a word, in runs of fill bytes and in
    windows that do not start on a word boundary."""
    from darkroom import image_structure

    rng = np.random.default_rng(length)
    data = rng.integers(0, 256, length, dtype=np.uint8)
    data[rng.random(length) < density] = 0xFF
    data[-1] = 0xD9  # a marker that ends the last word (and the window's last compared byte)
    data[: min(8, length - 1)] = 0xFF
    for window in (data, data[1:], data[3:]):
        if len(window) < 2:
            continue
        ff = np.flatnonzero(window[:-1] == 0xFF)
        following = window[ff + 1]
        keep = (following != 0x00) & (following != 0xFF) & ((following < 0xD0) | (following > 0xD7))
        assert np.array_equal(image_structure._marker_ends(window), ff[keep])
