"""The event loop our processes run on: uvloop where it is installed (every platform but Windows).

``darkroom serve`` gets it from uvicorn (``loop="auto"``, with httptools as its HTTP parser);
``darkroom worker`` builds its loop here. uvloop's loop and httptools take a third to a half of
the CPU asyncio's loop and h11 spend per request, measured in ``bench/FINDINGS.md``
(seventh pass: figures 2, 3 and 4).
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # Windows: uvloop has no build there
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
