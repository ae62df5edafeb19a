"""How a model process's C heap (glibc ``malloc``) keeps and gives back memory.

By default glibc serves every allocation of more than ~128 KB-32 MB (a threshold that moves) with
its own ``mmap`` and unmaps it on ``free``: each image array of a task then arrives as fresh pages,
and the first touch of each page is a page fault. A 12 MP style transfer or colour enhancement
made 13,000-62,000 of them per run in the model process (~0.1 s of system CPU on the bench VMs,
where a page fault also costs the host; bench/FINDINGS.md, eleventh pass). :func:`keep_freed_memory`
has allocations up to 32 MB (the largest threshold glibc takes) come from the heap and the heap
keep what is freed, so the next task reuses it; :func:`give_back_freed_memory` returns it to the
kernel when the process is idle. On a C library without these calls (not glibc) both do nothing.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any, Final

M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD_BYTES: Final = 32 << 20
"""glibc's largest ``M_MMAP_THRESHOLD`` on 64-bit systems (``HEAP_MAX_SIZE / 2``)."""
TRIM_THRESHOLD_BYTES: Final = 1 << 30


@cache
def _libc() -> Any | None:
    """The C library this process already runs on (its symbols, looked up in the process itself:
    ``ctypes.util.find_library`` would start ``ldconfig`` for a name, ~4 ms, at every call)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_memory() -> bool:
    """Serve allocations of up to 32 MB from the heap and do not trim it on ``free``. True if the
    C library took both settings."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def give_back_freed_memory() -> bool:
    """Return the heap's free pages to the kernel (``malloc_trim(0)``). True if any were."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))
