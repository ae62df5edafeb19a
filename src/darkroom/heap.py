"""The long-running processes' cyclic garbage collector: start-up objects out of its full passes."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect, then move every object that exists now (imported modules, the app, its routes and
    schemas) into the collector's permanent generation.

    The collector's full passes then no longer walk those hundreds of thousands of objects that
    live as long as the process. In the task pipeline of bench figure 3 (``bench.cost``, 600 tasks,
    16 at a time) the collector took 0.40-0.43 ms per task and its longest pause on the event loop
    was 116 ms; after this, 0.20-0.23 ms per task and 8-14 ms (bench/FINDINGS.md, eleventh pass).
    Called by ``darkroom serve`` and ``darkroom worker`` just before they start serving.
    """
    gc.collect()
    gc.freeze()
