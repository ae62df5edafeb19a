"""A fake ComfyUI server: /upload/image, /prompt, /history, /view, /interrupt, /queue."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.providers.fakes.server import Recorded, Script, png, record


class FakeComfyUI:
    def __init__(self, polls_before_done: int = 2) -> None:
        self.requests: list[Recorded] = []
        self.script = Script()
        self.polls_before_done = polls_before_done
        self.prompts: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.uploads: dict[str, bytes] = {}
        self.websockets: dict[str, WebSocket] = {}  # clientId -> socket (when /ws is enabled)
        self.ws_enabled = False
        self.ws_clients: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/upload/image", self.upload, methods=["POST"]),
                Route("/prompt", self.prompt, methods=["POST"]),
                Route("/history/{pid}", self.history, methods=["GET"]),
                Route("/view", self.view, methods=["GET"]),
                Route("/interrupt", self.simple, methods=["POST"]),
                Route("/queue", self.simple, methods=["POST"]),
                WebSocketRoute("/ws", self.ws),
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
        outcome = self.script.next("outcome")
        socket = self.websockets.get(rec.json.get("client_id", ""))
        if socket is not None:  # executed "on the GPU": reported over the websocket only
            outcome = "ws-running"
            task = asyncio.create_task(self._execute(pid, socket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.prompts[pid] = {"workflow": workflow, "outcome": outcome}
        self.polls[pid] = 0
        return JSONResponse({"prompt_id": pid, "number": len(self.prompts), "node_errors": {}})

    async def history(self, request: Request) -> Response:
        self.requests.append(await record(request))
        pid = request.path_params["pid"]
        if pid not in self.prompts:
            return JSONResponse({})
        self.polls[pid] += 1
        if self.prompts[pid]["outcome"] in ("hold", "ws-running"):
            return JSONResponse({})
        if self.prompts[pid]["outcome"] != "ws-done" and self.polls[pid] <= self.polls_before_done:
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

    async def ws(self, websocket: WebSocket) -> None:
        if not self.ws_enabled:
            await websocket.close(code=1008)
            return
        client_id = websocket.query_params.get("clientId", "")
        await websocket.accept()
        self.ws_clients.append(client_id)
        self.websockets[client_id] = websocket
        await websocket.send_text(json.dumps({"type": "status", "data": {"status": {"exec_info": {}}}}))
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            self.websockets.pop(client_id, None)

    async def _execute(self, pid: str, socket: WebSocket) -> None:
        await asyncio.sleep(0.05)
        await socket.send_text(json.dumps({"type": "execution_start", "data": {"prompt_id": pid}}))
        await socket.send_bytes(b"\x00\x00\x00\x01preview")
        for step in range(1, 4):
            data = {"value": step, "max": 3, "prompt_id": pid, "node": "3"}
            await socket.send_text(json.dumps({"type": "progress", "data": data}))
        self.prompts[pid]["outcome"] = "ws-done"
        await socket.send_text(json.dumps({"type": "executing", "data": {"node": None, "prompt_id": pid}}))
