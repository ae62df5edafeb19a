"""A real HTTP server on 127.0.0.1 (port 0) for a Starlette app, and a request recorder.

The fakes below speak the providers' documented wire formats; tests reach them through the
providers' configurable base URLs, never by patching our code.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request


def png(width: int = 16, height: int = 12, color: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


async def record(request: Request) -> Recorded:
    rec = Recorded(
        request.method,
        request.url.path,
        {k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
    )
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        rec.json = json.loads(await request.body())
    elif ctype.startswith("multipart/form-data"):
        async with request.form() as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    rec.files.setdefault(key, []).append(
                        (value.filename or "", value.content_type or "", data)
                    )
                else:
                    rec.form.setdefault(key, []).append(str(value))
    return rec


class Script:
    """Per-route queues of behaviours ('ok' when empty)."""

    def __init__(self) -> None:
        self.steps: dict[str, list[str]] = {}

    def push(self, route: str, *steps: str) -> None:
        self.steps.setdefault(route, []).extend(steps)

    def next(self, route: str) -> str:
        queue = self.steps.get(route)
        return queue.pop(0) if queue else "ok"


@asynccontextmanager
async def serve(app: Starlette, **config: Any) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on a free loopback port; yield its base URL (``config``: e.g. TLS)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    scheme = "https" if config.get("ssl_certfile") else "http"
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, **config)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
