"""A PNG writer for 8-bit gray/RGB arrays, with or without alpha: numpy ``up`` row filter + ISA-L deflate.

Why our own writer: on a 12 MP RGBA photo (figure 7's cut-out before its transparent pixels were
cleared; bench/FINDINGS.md, sixth pass) every library that writes PNG itself was 2-7x slower than
this for about the same size or far bigger (libvips compression 3 ``up`` 0.70 s / 16.3 MB,
imagecodecs' libpng level 1 0.58 s / 17.1 MB, libvips compression 1 0.39 s but 26.3 MB): the zlib
stream is the whole cost. ISA-L's igzip (``isal`` package) compresses it at level 2 in ~0.2 s to
17.2 MB, and the rest of a PNG file is a few fixed-format chunks. What is written:

* signature, ``IHDR`` (8-bit, colour type 0/2/4/6, no interlace),
* ``iCCP`` when a profile is given (the caller checks that it matches the colour type),
* the image data as one zlib stream (every row filtered with ``up``, type 2: each byte minus the
  byte above it, the first row minus zeros), split into ``IDAT`` chunks of at most
  :data:`IDAT_SIZE` bytes. Rows are filtered and compressed :data:`BAND_ROWS` at a time through
  one small buffer: the filtered band is still in the cache when the compressor reads it, and no
  second full-size copy of the image is made (~13 ms less than filtering the whole image first for
  the 12 MP cut-out),
* ``IEND``.

Nothing else: no ``pHYs``, ``tEXt``, ``eXIf`` or time chunk.

Images of at least :data:`PARALLEL_MIN_BYTES` are filtered and compressed in strips on one thread
per CPU (at most :data:`MAX_THREADS`; ISA-L and numpy release the GIL). Each strip is raw deflate
ending with a sync flush (an empty stored block: byte-aligned, not final), so the strips one after
the other are one valid deflate stream (pigz's approach: a strip does not refer back into the one
before it, which costs ~0.1 % in size); the zlib header and the Adler-32, combined from the strips'
own, are ours. The 12 MP cut-out of figure 7 (cut-out included, see ``prepare`` in :func:`encode`):
62 → 36-45 ms on two cores (bench/FINDINGS.md, seventh pass).
"""

from __future__ import annotations

import concurrent.futures
import os
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
from isal import isal_zlib

SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
LEVEL: Final = 2
"""ISA-L level (0-3). On the 12 MP cut-out level 1 and 2 take the same time and 2 is ~1 % smaller;
level 3 was slower *and* bigger on up-filtered photos."""
IDAT_SIZE: Final = 1 << 22
"""Largest IDAT chunk written (4 MiB); any size up to 2**31 - 1 is valid, decoders concatenate them."""

BAND_ROWS: Final = 64
PARALLEL_MIN_BYTES: Final = 1 << 22
"""Images with fewer bytes of pixels than this (4 MiB, ~1 MP RGBA) are compressed in the calling
thread alone."""
MAX_THREADS: Final = 4
STRIPS_PER_THREAD: Final = 4

Prepare = Callable[[int, int], object]
"""``prepare(top, bottom)``: make rows ``top`` to ``bottom`` (exclusive) of the pixels final
(see :func:`encode`)."""

_COLOUR_TYPE: Final = {1: 0, 2: 4, 3: 2, 4: 6}  # bands -> gray, gray+alpha, RGB, RGBA
_UP: Final = 2
_ICC_NAME: Final = b"ICC Profile"
_ZLIB_HEADER: Final = b"\x78\x5e"  # deflate, 32 KiB window, "fast" level (what ISA-L writes at levels 1-3)
_ADLER_BASE: Final = 65521


def _chunk(kind: bytes, payload: bytes | memoryview) -> tuple[bytes, bytes | memoryview, bytes]:
    """A chunk as three parts (length + type, payload, CRC), joined once with the whole file."""
    crc = isal_zlib.crc32(payload, isal_zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind, payload, struct.pack(">I", crc)


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings one after the other, from each one's own Adler-32 (zlib's
    ``adler32_combine``, which Python's ``zlib`` does not expose)."""
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % _ADLER_BASE
    b = (b1 + b2 + second_length * (a1 - 1)) % _ADLER_BASE
    return (b << 16) | a


class _Strip(NamedTuple):
    deflate: list[bytes]
    """Raw deflate blocks, ending on a byte boundary (sync flush), or with the final block."""
    adler: int
    """Adler-32 of the strip's filtered scanlines."""
    length: int
    """Bytes of filtered scanlines."""


def _strip(
    rows: npt.NDArray[np.uint8],
    top: int,
    bottom: int,
    *,
    last: bool,
    band: npt.NDArray[np.uint8],
    level: int,
    prepare: Prepare | None,
) -> _Strip:
    """Rows ``top`` to ``bottom`` (exclusive) of ``rows``, ``up``-filtered and deflated, :data:`BAND_ROWS`
    at a time through ``band`` (``BAND_ROWS×(stride + 1)``, first column already the filter type).

    ``prepare`` is called for each band before its rows are read, except for the strip's last row
    when another strip follows: that one was prepared before any strip started (the next strip
    reads it as the row above its first).
    """
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    adler = 1
    parts = []
    for start in range(top, bottom, BAND_ROWS):
        stop = min(start + BAND_ROWS, bottom)
        if prepare is not None:
            ready = stop if last or stop < bottom else stop - 1
            if ready > start:
                prepare(start, ready)
        filtered = band[: stop - start]
        out = filtered[:, 1:]
        if start == 0:
            out[0] = rows[0]  # the row above the first one is all zeros
            np.subtract(rows[1:stop], rows[: stop - 1], out=out[1:])
        else:
            np.subtract(rows[start:stop], rows[start - 1 : stop - 1], out=out)  # uint8 wraps: mod 256
        adler = isal_zlib.adler32(filtered, adler)
        parts.append(compressor.compress(filtered))
    parts.append(compressor.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_SYNC_FLUSH))
    return _Strip(parts, adler, (bottom - top) * band.shape[1])


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads_for(rows: npt.NDArray[np.uint8]) -> int:
    if rows.nbytes < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(_available_cpus(), MAX_THREADS))


def _image_data(
    rows: npt.NDArray[np.uint8], level: int, prepare: Prepare | None, threads: int | None
) -> list[bytes]:
    """The zlib stream of the scanlines of ``rows`` (``H×(W·C)``), every row ``up``-filtered, in
    pieces (joined only once, with the whole file).

    With more than one thread the rows are cut into strips (a few per thread, so a strip that
    compresses slowly does not leave the other threads idle), each filtered and deflated on its own
    (ISA-L releases the GIL, numpy too) and ending on a byte boundary (a sync flush); the strips one
    after the other are one deflate stream (pigz's approach), its Adler-32 combined from theirs.
    """
    height, width = rows.shape
    threads = _threads_for(rows) if threads is None else max(1, threads)
    count = max(1, min(threads * STRIPS_PER_THREAD if threads > 1 else 1, height))
    bounds = [height * i // count for i in range(count + 1)]
    if prepare is not None:
        for end in bounds[1:-1]:  # a strip's last row is the next strip's row above
            prepare(end - 1, end)
    strips: list[_Strip | None] = [None] * count
    queue = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        band = np.empty((min(BAND_ROWS, height), width + 1), dtype=np.uint8)
        band[:, 0] = _UP  # the filter type byte that starts every scanline
        while True:
            with lock:
                i = next(queue, None)
            if i is None:
                return
            strips[i] = _strip(
                rows, bounds[i], bounds[i + 1], last=i == count - 1, band=band, level=level, prepare=prepare
            )

    if count == 1:
        work()
    else:
        with concurrent.futures.ThreadPoolExecutor(threads - 1, thread_name_prefix="png") as pool:
            helpers = [pool.submit(work) for _ in range(threads - 1)]
            try:
                work()
            finally:  # the helpers read the array: let them finish before anything is raised
                concurrent.futures.wait(helpers)
            for helper in helpers:
                helper.result()
    adler, parts = 1, [_ZLIB_HEADER]
    for strip in strips:
        assert strip is not None
        adler = _adler32_combine(adler, strip.adler, strip.length)
        parts.extend(strip.deflate)
    parts.append(struct.pack(">I", adler))
    return parts


def _idat_chunks(stream: list[bytes]) -> list[bytes | memoryview]:
    """``IDAT`` chunks of at most :data:`IDAT_SIZE` bytes holding ``stream`` (pieces of the zlib
    stream, split wherever a chunk ends), as the parts of the file: no piece is copied here."""
    out: list[bytes | memoryview] = []
    pieces: list[memoryview] = []
    size = 0
    crc = isal_zlib.crc32(b"IDAT")

    def close() -> None:
        nonlocal crc, size
        out.extend([struct.pack(">I", size) + b"IDAT", *pieces, struct.pack(">I", crc)])
        pieces.clear()
        size, crc = 0, isal_zlib.crc32(b"IDAT")

    for part in stream:
        view = memoryview(part)
        while view:
            piece = view[: IDAT_SIZE - size]
            view = view[len(piece) :]
            pieces.append(piece)
            size += len(piece)
            crc = isal_zlib.crc32(piece, crc)
            if size == IDAT_SIZE:
                close()
    if size:
        close()
    return out


def encode(
    pixels: npt.NDArray[np.uint8],
    *,
    icc_profile: bytes | None = None,
    level: int = LEVEL,
    prepare: Prepare | None = None,
    threads: int | None = None,
) -> bytes:
    """PNG bytes of an ``H×W`` or ``H×W×C`` (C = 1-4) ``uint8`` array, lossless.

    ``prepare``, if given, is called with ``(top, bottom)`` before rows ``top`` to ``bottom``
    (exclusive) are read, so a last pass over the pixels (figure 7's cut-out) runs on rows still in
    the cache; together the calls cover every row exactly once, and calls for disjoint rows may run
    at the same time in different threads. The array is then read in place, so it must be
    C-contiguous. ``threads``: how many threads filter and compress (None: one per available CPU,
    at most :data:`MAX_THREADS`, for images of at least :data:`PARALLEL_MIN_BYTES`).
    """
    arr = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in _COLOUR_TYPE:
        raise ValueError(f"expected an H×W or H×W×C (C ≤ 4) uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width, bands = arr.shape
    if height < 1 or width < 1:
        raise ValueError(f"a PNG needs at least one pixel, got {width}x{height}")
    if prepare is not None and not arr.flags.c_contiguous:
        raise ValueError("prepare needs a C-contiguous array (it is read in place)")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[bands], 0, 0, 0)
    chunks = [_chunk(b"IHDR", ihdr)]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", _ICC_NAME + b"\0\0" + zlib.compress(icc_profile)))
    rows = np.ascontiguousarray(arr).reshape(height, width * bands)
    idats = _idat_chunks(_image_data(rows, level, prepare, threads))
    return b"".join([SIGNATURE, *(part for chunk in chunks for part in chunk), *idats, *_chunk(b"IEND", b"")])
