"""A fake OpenAI Images API (generations and edits) on loopback."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.providers.fakes.server import Recorded, Script, png, record

KEY = "sk-test-openai"


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script = Script()
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        self.app = Starlette(
            routes=[
                Route("/v1/images/generations", self.images, methods=["POST"]),
                Route("/v1/images/edits", self.images, methods=["POST"]),
            ]
        )

    async def images(self, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return await self._images(request)
        finally:
            self.in_flight -= 1

    async def _images(self, request: Request) -> Response:
        rec = await record(request)
        self.requests.append(rec)
        if rec.headers.get("authorization") != f"Bearer {KEY}":
            return _error(401, "invalid_api_key", "Incorrect API key provided.")
        step = self.script.next(request.url.path)
        if step == "429":
            return _error(429, "rate_limit_exceeded", "Rate limit reached.", {"retry-after": "0"})
        if step == "429-long":
            return _error(429, "rate_limit_exceeded", "Rate limit reached.", {"retry-after": "3600"})
        if step == "500":
            return _error(500, "server_error", "The server had an error.")
        if step in ("insufficient_quota", "billing_hard_limit_reached"):
            # OpenAI answers both with 429, like a rate limit (error codes guide).
            return _error(429, step, "You exceeded your current quota, please check your plan.")
        if step == "slow":
            await asyncio.sleep(3)
        if step == "filtered":
            return _error(400, "moderation_blocked", "Your request was rejected by the safety system.")
        if step == "malformed":
            return PlainTextResponse("<html>oops</html>", status_code=200)
        n = int((rec.json or {}).get("n") or (rec.form.get("n") or ["1"])[0])
        body: dict[str, Any] = {
            "created": 1700000000,
            "data": [{"b64_json": base64.b64encode(png(24, 16)).decode()} for _ in range(n)],
            "usage": {"total_tokens": 100, "input_tokens": 10, "output_tokens": 90},
        }
        return JSONResponse(body, headers={"x-request-id": f"req_{len(self.requests)}"})


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
        status_code=status,
        headers=headers,
    )
