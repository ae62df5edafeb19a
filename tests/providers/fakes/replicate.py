"""A fake Replicate API: predictions (create, get, cancel) and output files, on loopback."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.fakes.server import Recorded, Script, png, record

TOKEN = "r8_test_token"


class FakeReplicate:
    def __init__(self, polls_before_done: int = 2) -> None:
        self.base = ""  # set once served
        self.requests: list[Recorded] = []
        self.script = Script()
        self.polls_before_done = polls_before_done
        self.predictions: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.hold = asyncio.Event()  # while cleared with 'hold' mode, predictions stay processing
        self.hold.set()
        self.app = Starlette(
            routes=[
                Route("/v1/models/{owner}/{name}/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions", self.list, methods=["GET"]),
                Route("/v1/predictions/{pid}", self.get, methods=["GET"]),
                Route("/v1/predictions/{pid}/cancel", self.cancel, methods=["POST"]),
                Route("/files/{name}", self.file, methods=["GET"]),
            ]
        )

    @property
    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/predictions")]

    async def create(self, request: Request) -> Response:
        rec = await record(request)
        self.requests.append(rec)
        if rec.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse(
                {"title": "Unauthenticated", "detail": "bad token", "status": 401}, status_code=401
            )
        step = self.script.next("create")
        if step == "429":
            return JSONResponse(
                {"title": "Too Many Requests", "detail": "throttled", "status": 429},
                status_code=429,
                headers={"retry-after": "0"},
            )
        if step in ("500", "502"):
            return JSONResponse({"detail": "boom"}, status_code=int(step))
        if step == "402":
            return JSONResponse(
                {"title": "Payment Required", "detail": "You have run out of credit.", "status": 402},
                status_code=402,
            )
        pid = secrets.token_hex(8)
        outcome = self.script.next("outcome")
        prediction: dict[str, Any] = {
            "id": pid,
            "model": "/".join(request.path_params.values()) or "versioned",
            "version": rec.json.get("version", "v1hash"),
            "input": rec.json["input"],
            "logs": "",
            "output": None,
            "error": None,
            "status": "starting",
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "urls": {
                "get": f"{self.base}/v1/predictions/{pid}",
                "cancel": f"{self.base}/v1/predictions/{pid}/cancel",
            },
            "_outcome": outcome,
        }
        self.predictions[pid] = prediction
        self.polls[pid] = 0
        # Accepted, but the answer never reaches the client: a gateway error, or so slow that
        # the client times out.
        if step == "500-after-create":
            return JSONResponse({"detail": "upstream error"}, status_code=502)
        if step == "slow-after-create":
            await asyncio.sleep(3)
        return JSONResponse(_public(prediction), status_code=201)

    async def list(self, request: Request) -> Response:
        """``GET /v1/predictions``: the account's predictions, newest first, paginated."""
        self.requests.append(await record(request))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"detail": "bad token", "status": 401}, status_code=401)
        listed = [_public(p) for p in reversed(self.predictions.values())]
        return JSONResponse({"previous": None, "next": None, "results": listed})

    async def get(self, request: Request) -> Response:
        self.requests.append(await record(request))
        pid = request.path_params["pid"]
        prediction = self.predictions.get(pid)
        if prediction is None:
            return JSONResponse({"detail": "Not found.", "status": 404}, status_code=404)
        if self.script.next("get") == "500":
            return JSONResponse({"detail": "boom"}, status_code=500)
        self.polls[pid] += 1
        if prediction["status"] in ("succeeded", "failed", "canceled"):
            return JSONResponse(_public(prediction))
        if prediction["_outcome"] == "hold" or self.polls[pid] < self.polls_before_done:
            prediction["status"] = "processing"
            prediction["logs"] = f"{min(99, 30 * self.polls[pid])}%|###      | 3/10"
        else:
            self.finish(pid)
        return JSONResponse(_public(prediction))

    def finish(self, pid: str) -> dict[str, Any]:
        prediction = self.predictions[pid]
        outcome = prediction["_outcome"]
        if outcome == "nsfw":
            prediction.update(status="failed", error="NSFW content detected. Try running it again.")
        elif outcome == "error":
            prediction.update(status="failed", error="CUDA out of memory")
        elif outcome == "evil-url":
            prediction.update(status="succeeded", output=["http://169.254.169.254/latest/meta-data"])
        else:
            n = int(prediction["input"].get("num_outputs", 1))
            prediction.update(
                status="succeeded",
                logs="100%|##########| 10/10",
                output=[f"{self.base}/files/{pid}_{i}.png" for i in range(n)],
            )
        return _public(prediction)

    async def cancel(self, request: Request) -> Response:
        self.requests.append(await record(request))
        prediction = self.predictions.get(request.path_params["pid"])
        if prediction is None:
            return JSONResponse({"detail": "Not found.", "status": 404}, status_code=404)
        prediction["status"] = "canceled"
        return JSONResponse(_public(prediction))

    async def file(self, request: Request) -> Response:
        self.requests.append(await record(request))
        return Response(png(32, 32, (10, 120, 200)), media_type="image/png")


def _public(prediction: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prediction.items() if not k.startswith("_")}
