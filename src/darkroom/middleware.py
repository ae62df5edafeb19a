"""Refuse a request whose declared Content-Length is over the limit, with our JSON envelope,
before anything reads it. Bodies without a Content-Length (chunked) are counted by Starlette's
RequestBodyLimitMiddleware inside it, whose 413 reaches our error handler as an HTTPException."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send


class ContentLengthGuard:
    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_body_size:
                mb = self.max_body_size / 2**20
                body = json.dumps(
                    {
                        "success": False,
                        "code": "request_too_large",
                        "message": f"The request is larger than the {mb:.0f} MB this server accepts.",
                    }
                ).encode()
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
