"""Structural validation of uploaded JPEG, PNG and WebP files, without decoding a pixel.

The upload request runs this instead of a full decode (bench/FINDINGS.md, third pass): it is O(n)
at memory speed (a 9 MB JPEG in a few ms: one vectorised scan for markers; a PNG's CRCs through
zlib.crc32) and refuses truncated files, garbage and impossible structures at once. What it
cannot see (e.g. a broken Huffman code inside the entropy-coded data, or a PNG whose compressed
data inflates to too few rows) is found by the full decode in the worker, which decodes the image
anyway; that task then fails with ``invalid_input`` and its credits are released.

Every check raises :class:`StructureError` with a human message. The pixel limit is enforced from
the header separately (``darkroom.imaging``), before this runs.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt


class StructureError(ValueError):
    """The bytes are not a well-formed file of the claimed type."""


Data: TypeAlias = bytes | mmap.mmap
"""The file in memory, or mapped read-only (an upload streamed to a staging file)."""


def check(data: Data, content_type: str) -> None:
    """Validate ``data`` as ``image/jpeg``, ``image/png`` or ``image/webp``."""
    if content_type == "image/jpeg":
        check_jpeg(data)
    elif content_type == "image/png":
        check_png(data)
    elif content_type == "image/webp":
        check_webp(data)
    else:
        raise StructureError(f"no structure check for {content_type}")


# --- JPEG (ITU T.81, annex B) ----------------------------------------------------------------------

_SOI: Final = 0xD8
_EOI: Final = 0xD9
_SOS: Final = 0xDA
_DHT: Final = 0xC4
_JPG: Final = 0xC8
_DAC: Final = 0xCC
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {_DHT, _JPG, _DAC}
# markers that may stand between the segments of a frame (tables, misc., app data, extensions)
_SEGMENTS: Final = frozenset({_DHT, _DAC, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xFE, *range(0xE0, 0xF0)})
_EXTENSIONS: Final = frozenset(range(0xF0, 0xFE))  # JPGn: skipped by decoders, length-prefixed

MAX_SEGMENTS: Final = 65_536
"""Marker segments (JPEG) or chunks (PNG) per file. Real files have tens to a few thousand; the cap
bounds the Python loop for a crafted file of millions of 4-byte segments (~2 s of CPU at 10 MB)."""


_SCAN_WINDOW: Final = 1 << 20


_BYTE_OFFSETS: Final = np.arange(8, dtype=np.intp)


def _marker_ends(window: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    """Offsets in ``window`` (but its last byte) of every 0xFF that starts a marker ending
    entropy-coded data: followed by a byte that is not a stuffed zero, a restart marker (RST0-7,
    part of the scan) or another fill 0xFF."""
    body = window[:-1]
    is_ff = body == 0xFF
    # 0xFF is rare in entropy-coded data (about one byte in 800): ``nonzero`` over the bytes was
    # most of the scan's time, so the 8-byte words that hold one are found first (an eighth of
    # the elements), then the bytes inside those words.
    whole = len(body) - len(body) % 8
    words = np.flatnonzero(is_ff[:whole].view(np.uint64) != 0)
    candidates = (words[:, None] * 8 + _BYTE_OFFSETS).ravel()
    ff: npt.NDArray[np.intp] = candidates[is_ff[candidates]]
    if whole < len(body):
        ff = np.concatenate([ff, np.flatnonzero(is_ff[whole:]) + whole])
    following = window[ff + 1]
    ends = (following != 0x00) & (following != 0xFF) & ((following < 0xD0) | (following > 0xD7))
    found: npt.NDArray[np.intp] = ff[ends]
    return found


def _jpeg_markers(data: Data) -> npt.NDArray[np.intp]:
    """Offsets of every 0xFF that starts a marker ending entropy-coded data (:func:`_marker_ends`)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    found: list[npt.NDArray[np.intp]] = [np.empty(0, dtype=np.intp)]
    # In windows (each seeing one byte past its end): the temporary arrays stay at ~1 MB instead
    # of the file's size (a 10 MB upload's check held ~9 MB more while it ran).
    for start in range(0, len(arr) - 1, _SCAN_WINDOW):
        found.append(_marker_ends(arr[start : start + _SCAN_WINDOW + 1]) + start)
    return np.concatenate(found)


def check_jpeg(data: Data) -> None:
    """SOI; well-formed marker segments with lengths inside the file; exactly one frame header
    (SOFn) with non-zero dimensions before the first scan; each scan's entropy-coded data ending
    at a marker; EOI after the last scan. Bytes after EOI (e.g. MPF second pictures) are allowed."""
    size = len(data)
    if size < 4 or data[0] != 0xFF or data[1] != _SOI:
        raise StructureError("it does not start with a JPEG SOI marker")
    markers: npt.NDArray[np.intp] | None = None
    pos = 2
    frame = False
    scans = 0
    for _ in range(MAX_SEGMENTS):
        if pos >= size or data[pos] != 0xFF:
            raise StructureError(f"expected a marker at byte {pos}" if pos < size else "it ends without EOI")
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            raise StructureError("it ends without EOI")
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            if scans == 0:
                raise StructureError("it ends before any image data")
            return
        if marker == _SOI or marker == 0x01 or marker < 0xC0 or 0xD0 <= marker <= 0xD7:
            raise StructureError(f"impossible marker 0xFF{marker:02X} at byte {pos - 2}")
        if pos + 2 > size:
            raise StructureError("it is truncated inside a marker segment")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > size:
            raise StructureError(f"marker 0xFF{marker:02X} at byte {pos - 2} runs past the end of the file")
        segment = data[pos + 2 : pos + length] if marker in _SOF or marker == _SOS else b""
        if marker in _SOF:
            if frame:
                raise StructureError("it has a second frame header (SOF)")
            _check_sof(segment)
            frame = True
        elif marker == _SOS:
            if not frame:
                raise StructureError("image data (SOS) comes before the frame header (SOF)")
            _check_sos(segment)
            scans += 1
            if markers is None:
                markers = _jpeg_markers(data)
            start = pos + length
            index = int(np.searchsorted(markers, start))
            if index >= len(markers):
                raise StructureError("it is truncated inside the image data")
            pos = int(markers[index])
            continue
        elif marker not in _SEGMENTS and marker not in _EXTENSIONS:
            raise StructureError(f"impossible marker 0xFF{marker:02X} at byte {pos - 2}")
        pos += length
    raise StructureError(f"it has more than {MAX_SEGMENTS:,} marker segments")


def _check_sof(segment: bytes) -> None:
    if len(segment) < 6:
        raise StructureError("the frame header (SOF) is too short")
    precision, height, width, components = struct.unpack_from(">BHHB", segment)
    if precision not in (8, 12, 16) or height == 0 or width == 0 or not 1 <= components <= 4:
        raise StructureError(f"the frame header (SOF) is invalid ({width}x{height}, {components} components)")
    if len(segment) != 6 + 3 * components:
        raise StructureError("the frame header (SOF) has the wrong length")
    for i in range(components):
        sampling = segment[6 + 3 * i + 1]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 0x0F <= 4):
            raise StructureError("the frame header (SOF) has invalid sampling factors")


def _check_sos(segment: bytes) -> None:
    if not segment or not 1 <= segment[0] <= 4 or len(segment) != 4 + 2 * segment[0]:
        raise StructureError("a scan header (SOS) is invalid")


# --- PNG (ISO/IEC 15948) -------------------------------------------------------------------------

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_DEPTHS: Final = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CRITICAL: Final = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})


def check_png(data: Data) -> None:
    """Signature; IHDR first with valid dimensions, depth and colour type; every chunk inside the
    file with a correct CRC; no unknown critical chunk; PLTE for palette images; consecutive IDAT
    chunks starting a zlib stream; IEND. Bytes after IEND are ignored, as decoders do."""
    if data[: len(_PNG_SIGNATURE)] != _PNG_SIGNATURE:
        raise StructureError("it does not start with the PNG signature")
    with memoryview(data) as view:  # released even on error: a mapped file can then be closed
        _check_png_chunks(data, view)


def _check_png_chunks(data: Data, view: memoryview) -> None:
    size = len(data)
    pos = len(_PNG_SIGNATURE)
    seen: set[bytes] = set()
    last = b""
    color_type = -1
    for _ in range(MAX_SEGMENTS):
        if pos + 12 > size:
            raise StructureError("it ends without IEND")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if length > 0x7FFFFFFF or end + 4 > size:
            raise StructureError(f"chunk {kind!r} at byte {pos} runs past the end of the file")
        if not (kind.isascii() and kind.isalpha()):
            raise StructureError(f"invalid chunk type at byte {pos}")
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(view[pos + 4 : end]) != crc:
            raise StructureError(f"chunk {kind.decode()} at byte {pos} has a wrong CRC")
        if not seen and kind != b"IHDR":
            raise StructureError("the first chunk is not IHDR")
        if kind == b"IHDR":
            if seen:
                raise StructureError("it has a second IHDR")
            color_type = _check_ihdr(data[pos + 8 : end])
        elif kind == b"IDAT":
            if b"IDAT" in seen and last != b"IDAT":
                raise StructureError("its IDAT chunks are not consecutive")
            if b"IDAT" not in seen:
                if color_type == 3 and b"PLTE" not in seen:
                    raise StructureError("a palette image has no palette (PLTE)")
                _check_zlib_header(data[pos + 8 : min(end, pos + 10)])
        elif kind == b"IEND":
            if b"IDAT" not in seen:
                raise StructureError("it has no image data (IDAT)")
            if length != 0:
                raise StructureError("its IEND chunk is not empty")
            return
        elif kind == b"PLTE" and (length == 0 or length % 3 or length > 768):
            raise StructureError("its palette (PLTE) is invalid")
        elif kind[0] & 0x20 == 0 and kind not in _PNG_CRITICAL:
            raise StructureError(f"unknown critical chunk {kind.decode()}")
        seen.add(kind)
        last = kind
        pos = end + 4
    raise StructureError(f"it has more than {MAX_SEGMENTS:,} chunks")


def _check_ihdr(payload: bytes) -> int:
    if len(payload) != 13:
        raise StructureError("its IHDR chunk has the wrong length")
    width, height, depth, color, compression, filtering, interlace = struct.unpack(">IIBBBBB", payload)
    if not (0 < width <= 0x7FFFFFFF and 0 < height <= 0x7FFFFFFF):
        raise StructureError(f"its dimensions {width}x{height} are invalid")
    if depth not in _PNG_DEPTHS.get(color, ()) or compression or filtering or interlace > 1:
        raise StructureError("its IHDR chunk has an invalid bit depth, colour type or method")
    return int(color)


def _check_zlib_header(payload: bytes) -> None:
    if len(payload) < 2 or payload[0] & 0x0F != 8 or (payload[0] << 8 | payload[1]) % 31:
        raise StructureError("its image data (IDAT) does not start a zlib stream")


# --- WebP (RFC 9649) -----------------------------------------------------------------------------


def check_webp(data: Data) -> None:
    """RIFF header whose size fits the file; chunks inside it; a VP8/VP8L bitstream header (or a
    VP8X extended header followed by one, or by animation frames) with valid dimensions."""
    if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise StructureError("it does not start with a RIFF WEBP header")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = 8 + riff_size
    if riff_size < 12 or end > len(data):
        raise StructureError("it is shorter than its RIFF header says (truncated)")
    pos = 12
    kinds: list[bytes] = []
    while pos < end:
        if pos + 8 > end:
            raise StructureError(f"a chunk header at byte {pos} runs past the end of the RIFF data")
        kind, length = struct.unpack_from("<4sI", data, pos)
        payload_end = pos + 8 + length
        if payload_end > end:
            raise StructureError(f"chunk {kind!r} at byte {pos} runs past the end of the file (truncated)")
        payload = data[pos + 8 : min(payload_end, pos + 8 + 32)]  # the headers are in the first bytes
        if not kinds and kind not in (b"VP8 ", b"VP8L", b"VP8X"):
            raise StructureError(f"the first chunk is {kind!r}, not VP8, VP8L or VP8X")
        if kind == b"VP8 ":
            _check_vp8(payload, length)
        elif kind == b"VP8L":
            _check_vp8l(payload)
        elif kind == b"VP8X" and (kinds or length < 10):
            raise StructureError("its VP8X header is invalid")
        kinds.append(kind)
        pos = payload_end + (length & 1)
    if kinds[0] == b"VP8X" and b"VP8 " not in kinds and b"VP8L" not in kinds and b"ANMF" not in kinds:
        raise StructureError("it has no image data (VP8, VP8L or ANMF chunk)")


def _check_vp8(payload: bytes, length: int) -> None:
    if length < 10 or payload[3:6] != b"\x9d\x01\x2a":
        raise StructureError("its VP8 bitstream header is invalid")
    tag = payload[0] | payload[1] << 8 | payload[2] << 16
    width, height = struct.unpack_from("<HH", payload, 6)
    if tag & 1 or (tag >> 5) > length - 10 or width & 0x3FFF == 0 or height & 0x3FFF == 0:
        raise StructureError("its VP8 frame header is invalid")


def _check_vp8l(payload: bytes) -> None:
    if len(payload) < 5 or payload[0] != 0x2F:
        raise StructureError("its VP8L bitstream header is invalid")
    (bits,) = struct.unpack_from("<I", payload, 1)
    if bits >> 29:  # the 3-bit version must be 0
        raise StructureError("its VP8L version is not 0")
