"""A fake Stability AI API: v2beta stable-image (sync and async) and v1 SDXL, on loopback."""

from __future__ import annotations

import base64
import secrets

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.providers.fakes.server import Recorded, Script, png, record

KEY = "sk-test-stability"


def _image_body(reason: str = "SUCCESS") -> dict[str, object]:
    return {"image": base64.b64encode(png(20, 20)).decode(), "finish_reason": reason, "seed": 42}


class FakeStability:
    def __init__(self, polls_before_done: int = 2) -> None:
        self.requests: list[Recorded] = []
        self.script = Script()
        self.polls_before_done = polls_before_done
        self.results: dict[str, int] = {}  # generation id -> polls so far
        self.app = Starlette(
            routes=[
                Route("/v2beta/stable-image/{group}/{op}", self.v2beta, methods=["POST"]),
                Route("/v2beta/results/{gid}", self.result, methods=["GET"]),
                Route(
                    "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image", self.sdxl, methods=["POST"]
                ),
            ]
        )

    def _auth(self, rec: Recorded) -> Response | None:
        if rec.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"id": "x", "name": "unauthorized", "errors": ["bad key"]}, status_code=401)
        return None

    async def v2beta(self, request: Request) -> Response:
        rec = await record(request)
        self.requests.append(rec)
        if (denied := self._auth(rec)) is not None:
            return denied
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return JSONResponse({"name": "bad_request", "errors": ["multipart required"]}, status_code=400)
        step = self.script.next(request.url.path)
        if step == "moderation":
            return JSONResponse(
                {"id": "m1", "name": "content_moderation", "errors": ["flagged by moderation"]},
                status_code=403,
            )
        if step == "filtered":
            return JSONResponse(_image_body("CONTENT_FILTERED"))
        if step == "429":
            return JSONResponse(
                {"name": "rate_limit_exceeded", "errors": ["slow down"]},
                status_code=429,
                headers={"retry-after": "0"},
            )
        if step == "500":
            return JSONResponse({"name": "internal_error", "errors": ["boom"]}, status_code=500)
        if step == "402":
            return JSONResponse(
                {"id": "p1", "name": "payment_required", "errors": ["lack sufficient credits"]},
                status_code=402,
            )
        if step == "malformed":
            return PlainTextResponse("not json")
        if request.path_params["op"] == "replace-background-and-relight" or step == "async":
            gid = secrets.token_hex(32)
            self.results[gid] = 0
            return JSONResponse({"id": gid})
        if step == "bytes" or step == "bytes-filtered":  # what Accept: image/* gets
            reason = "CONTENT_FILTERED" if step == "bytes-filtered" else "SUCCESS"
            return Response(
                png(20, 20), media_type="image/png", headers={"finish-reason": reason, "seed": "1"}
            )
        return JSONResponse(_image_body())

    async def result(self, request: Request) -> Response:
        rec = await record(request)
        self.requests.append(rec)
        gid = request.path_params["gid"]
        if gid not in self.results:
            return JSONResponse({"name": "not_found", "errors": ["unknown id"]}, status_code=404)
        self.results[gid] += 1
        if self.results[gid] <= self.polls_before_done:
            return JSONResponse({"id": gid, "status": "in-progress"}, status_code=202)
        return JSONResponse(_image_body())

    async def sdxl(self, request: Request) -> Response:
        rec = await record(request)
        self.requests.append(rec)
        if (denied := self._auth(rec)) is not None:
            return denied
        step = self.script.next(request.url.path)
        samples = int(rec.json.get("samples", 1))
        reason = "CONTENT_FILTERED" if step == "filtered" else "SUCCESS"
        artifacts = [
            {"base64": base64.b64encode(png(16, 16)).decode(), "seed": i, "finishReason": reason}
            for i in range(samples)
        ]
        return JSONResponse({"artifacts": artifacts})
