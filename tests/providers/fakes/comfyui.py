"""A fake ComfyUI server: /upload/image, /prompt, /history, /view, /interrupt, /queue."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.fakes.server import Recorded, Script, png, record


class FakeComfyUI:
    def __init__(self, polls_before_done: int = 2) -> None:
        self.requests: list[Recorded] = []
        self.script = Script()
        self.polls_before_done = polls_before_done
        self.prompts: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.uploads: dict[str, bytes] = {}
        self.app = Starlette(
            routes=[
                Route("/upload/image", self.upload, methods=["POST"]),
                Route("/prompt", self.prompt, methods=["POST"]),
                Route("/history/{pid}", self.history, methods=["GET"]),
                Route("/view", self.view, methods=["GET"]),
                Route("/interrupt", self.simple, methods=["POST"]),
                Route("/queue", self.simple, methods=["POST"]),
            ]
        )

    async def upload(self, request: Request) -> Response:
        rec = await record(request)
        self.requests.append(rec)
        name, _, data = rec.files["image"][0]
        self.uploads[name] = data
        return JSONResponse({"name": name, "subfolder": "", "type": "input"})

    async def prompt(self, request: Request) -> Response:
        rec = await record(request)
        self.requests.append(rec)
        workflow = rec.json["prompt"]
        if self.script.next("prompt") == "invalid":
            return JSONResponse(
                {
                    "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed"},
                    "node_errors": {"4": {"errors": [{"message": "ckpt not found"}]}},
                },
                status_code=400,
            )
        pid = str(uuid.uuid4())
        self.prompts[pid] = {"workflow": workflow, "outcome": self.script.next("outcome")}
        self.polls[pid] = 0
        return JSONResponse({"prompt_id": pid, "number": len(self.prompts), "node_errors": {}})

    async def history(self, request: Request) -> Response:
        self.requests.append(await record(request))
        pid = request.path_params["pid"]
        if pid not in self.prompts:
            return JSONResponse({})
        self.polls[pid] += 1
        if self.polls[pid] <= self.polls_before_done or self.prompts[pid]["outcome"] == "hold":
            return JSONResponse({})
        if self.prompts[pid]["outcome"] == "error":
            status = {"status_str": "error", "completed": False, "messages": [["execution_error", {}]]}
            return JSONResponse({pid: {"prompt": [], "outputs": {}, "status": status}})
        images = [{"filename": f"darkroom_{pid[:8]}_00001_.png", "subfolder": "", "type": "output"}]
        entry = {
            "prompt": [],
            "outputs": {"9": {"images": images}},
            "status": {"status_str": "success", "completed": True, "messages": []},
        }
        return JSONResponse({pid: entry})

    async def view(self, request: Request) -> Response:
        self.requests.append(await record(request))
        return Response(png(40, 30, (50, 200, 50)), media_type="image/png")

    async def simple(self, request: Request) -> Response:
        self.requests.append(await record(request))
        return Response(status_code=200)
