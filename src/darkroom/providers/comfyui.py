"""ComfyUI, a self-hosted GPU server, driven by workflow templates.

Wire format (ComfyUI's server routes, comfyanonymous/ComfyUI ``server.py``, and its example
``script_examples/websockets_api_example.py``):

* ``POST /upload/image`` — multipart ``image`` file (+ ``overwrite``) → ``{"name", "subfolder",
  "type"}``; the name goes into the workflow's ``LoadImage`` node.
* ``POST /prompt`` — ``{"prompt": <API-format workflow>, "client_id": …}`` → ``{"prompt_id",
  "number", "node_errors"}``; 400 ``{"error": {…}, "node_errors": {…}}`` when the workflow is invalid.
* ``GET /history/{prompt_id}`` — ``{}`` while queued or running, then ``{prompt_id: {"outputs":
  {node: {"images": [{"filename", "subfolder", "type"}]}}, "status": {"status_str": "success" |
  "error", "completed": bool, "messages": […]}}}``.
* ``GET /view?filename=&subfolder=&type=`` — the image bytes.
* ``POST /interrupt`` (stops the running prompt) and ``POST /queue {"delete": [id]}`` (drops a
  queued one) on cancel.

Workflows are JSON files per task type (``comfyui_workflows/<task_type>.json`` in the package, or
``COMFYUI_WORKFLOWS_DIR``) in ComfyUI's API format. String values ``"{{prompt}}"``,
``"{{negative_prompt}}"``, ``"{{seed}}"``, ``"{{width}}"``, ``"{{height}}"``, ``"{{count}}"``,
``"{{checkpoint}}"`` and ``"{{image}}"`` are replaced (whole-value placeholders keep the value's
type).

Progress: before queueing, the run opens ComfyUI's websocket ``/ws?clientId=<id>`` with the
``client_id`` it then sends with the prompt; ComfyUI reports ``{"type": "progress", "data":
{"value", "max", "prompt_id"}}`` and, when the prompt is done, ``{"type": "executing", "data":
{"node": null, "prompt_id"}}`` (or ``execution_error``). Those messages move the progress and wake
the wait; ``/history`` stays the source of truth and is polled anyway, so a lost or refused
websocket (or a resumed run, whose messages went to the old client) only makes it slower.

The ComfyUI URL is the operator's own server, so it may be on a private
network: it is the one exception to the public-address rule of the result downloader.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import websockets
from websockets.asyncio.client import connect as ws_connect

from darkroom.config import Settings
from darkroom.providers.base import (
    InvalidInput,
    OutputImage,
    ProgressCallback,
    ProviderError,
    ProviderRequest,
    ProviderResult,
    ProviderTimeout,
    TaskTypeSpec,
)
from darkroom.providers.http import ConcurrencyLimit, ProviderHttp, RetryPolicy, error_for_status, json_body
from darkroom.providers.limits import check_request
from darkroom.providers.outputs import output_image
from darkroom.providers.specs import CUSTOM, CUSTOM_SPEC, TEXT_TO_IMAGE, TEXT_TO_IMAGE_SPEC, size_of

log = logging.getLogger(__name__)

# The workflows edit one image and take no mask.
_SPECS = {
    TEXT_TO_IMAGE: TEXT_TO_IMAGE_SPEC,
    CUSTOM: dataclasses.replace(CUSTOM_SPEC, max_inputs=1, supports_mask=False),
}
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def load_workflows(directory: Path | None) -> dict[str, dict[str, Any]]:
    """The workflow of each task type: the operator's directory first, then the shipped ones."""
    found: dict[str, dict[str, Any]] = {}
    shipped = resources.files("darkroom.providers") / "comfyui_workflows"
    for task_type in _SPECS:
        candidates = []
        if directory is not None:
            candidates.append(directory / f"{task_type}.json")
        for path in candidates:
            if path.is_file():
                found[task_type] = json.loads(path.read_text())
                break
        else:
            packaged = shipped / f"{task_type}.json"
            if packaged.is_file():
                found[task_type] = json.loads(packaged.read_text())
    return found


def fill(template: Any, values: Mapping[str, Any]) -> Any:
    """Replace ``{{name}}`` placeholders in every string of the workflow."""
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)
    return template


class ComfyUIProvider:
    name = "comfyui"

    def __init__(self, settings: Settings) -> None:
        if not settings.comfyui_url:
            raise ValueError("COMFYUI_URL is required for the comfyui provider")
        self.policy = RetryPolicy.from_settings(settings)
        self.http = ProviderHttp(self.name, settings.comfyui_url, self.policy)
        self.ws_url = "ws" + settings.comfyui_url.rstrip("/").removeprefix("http") + "/ws"
        self.workflows = load_workflows(settings.comfyui_workflows_dir)
        self.checkpoint = settings.comfyui_checkpoint
        self.limit = ConcurrencyLimit(settings.comfyui_concurrency)

    def capabilities(self) -> Mapping[str, TaskTypeSpec]:
        return MappingProxyType({t: _SPECS[t] for t in self.workflows})

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        workflow = self.workflows.get(request.task_type)
        if workflow is None:
            raise InvalidInput(f"comfyui has no workflow for {request.task_type}.")
        check_request(_SPECS.get(request.task_type), request, self.name)
        async with self.limit:
            client_id = uuid.uuid4().hex
            watch = _Watch(progress)
            listener = asyncio.create_task(self._listen(client_id, watch))
            with contextlib.suppress(TimeoutError):  # without a websocket: /history polling alone
                await asyncio.wait_for(asyncio.shield(watch.connected.wait()), 5)
            try:
                prompt_id = request.resume_id
                if prompt_id is None:
                    values = await self._values(request)
                    prompt_id = await self._queue(fill(workflow, values), client_id)
                    await request.checkpoint(prompt_id)
                watch.prompt_id = prompt_id
                await progress(10)
                entry = await self._wait(prompt_id, progress, watch)
                outputs = await self._outputs(entry)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
            await progress(100)
            return ProviderResult(outputs, request_id=prompt_id, model=self.checkpoint)

    async def _listen(self, client_id: str, watch: _Watch) -> None:
        """Follow the websocket's progress messages for our prompt (best effort)."""
        try:
            async with ws_connect(
                f"{self.ws_url}?clientId={client_id}", open_timeout=5, max_size=2**22
            ) as ws:
                watch.connected.set()
                async for message in ws:
                    if isinstance(message, str):  # binary frames are image previews
                        await watch.handle(message)
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            log.info("comfyui websocket unavailable (%s); polling /history", exc.__class__.__name__)
        finally:
            watch.connected.set()

    async def _values(self, request: ProviderRequest) -> dict[str, Any]:
        p = request.parameters
        width, height = size_of(p.get("size"))
        seed = p.get("seed")
        values: dict[str, Any] = {
            "prompt": str(p.get("prompt") or request.prompt or ""),
            "negative_prompt": str(p.get("negative_prompt") or ""),
            "seed": int(seed) if seed is not None else secrets.randbelow(2**32 - 1),
            "width": width,
            "height": height,
            "count": int(p.get("count") or 1),
            "checkpoint": self.checkpoint,
        }
        if request.inputs:
            values["image"] = await self._upload(request, 0)
        return values

    async def _upload(self, request: ProviderRequest, index: int) -> str:
        img = request.inputs[index]
        filename = f"darkroom_{request.task_id}_{index + 1}.{_EXT.get(img.content_type, 'png')}"
        response = await self.http.send(
            "POST",
            "/upload/image",
            data={"overwrite": "true"},
            files={"image": (filename, img.data, img.content_type)},
        )
        if response.status_code >= 400:
            raise error_for_status(self.name, response)
        body = json_body(self.name, response)
        if not isinstance(body.get("name"), str):
            raise ProviderError("comfyui sent a malformed upload answer (no name).")
        sub = body.get("subfolder")
        return f"{sub}/{body['name']}" if isinstance(sub, str) and sub else str(body["name"])

    async def _queue(self, workflow: dict[str, Any], client_id: str) -> str:
        response = await self.http.send("POST", "/prompt", json={"prompt": workflow, "client_id": client_id})
        if response.status_code == 400:
            raise InvalidInput(f"ComfyUI refused the workflow: {response.text[:300]}")
        if response.status_code >= 400:
            raise error_for_status(self.name, response)
        body = json_body(self.name, response)
        if body.get("node_errors"):
            raise InvalidInput(f"ComfyUI refused the workflow: {json.dumps(body['node_errors'])[:300]}")
        if not isinstance(body.get("prompt_id"), str):
            raise ProviderError("comfyui sent a malformed answer (no prompt_id).")
        return str(body["prompt_id"])

    async def _wait(self, prompt_id: str, progress: ProgressCallback, watch: _Watch) -> dict[str, Any]:
        deadline = time.monotonic() + self.policy.deadline
        step = 0
        while True:
            response = await self.http.send("GET", f"/history/{prompt_id}", idempotent=True)
            if response.status_code >= 400:
                raise error_for_status(self.name, response)
            body = json_body(self.name, response)
            entry = body.get(prompt_id)
            if isinstance(entry, dict):
                status = entry.get("status") or {}
                if isinstance(status, dict) and status.get("status_str") == "error":
                    raise ProviderError(
                        f"The ComfyUI workflow failed: {json.dumps(status.get('messages'))[:300]}"
                    )
                if not isinstance(status, dict) or status.get("completed", True):
                    return entry
            step += 1
            if not watch.reported:
                await progress(min(90.0, 10 + 4 * step))
            if time.monotonic() > deadline:
                raise ProviderTimeout(
                    f"ComfyUI did not finish {prompt_id} within {self.policy.deadline:g} s."
                )
            with contextlib.suppress(TimeoutError):  # the websocket may say it's done sooner
                await asyncio.wait_for(watch.finished.wait(), self.policy.poll_interval)

    async def _outputs(self, entry: dict[str, Any]) -> list[OutputImage]:
        outputs = entry.get("outputs")
        if not isinstance(outputs, dict):
            raise ProviderError("comfyui sent a malformed history (no outputs).")
        files = [
            image
            for node in outputs.values()
            if isinstance(node, dict)
            for image in node.get("images") or []
            if isinstance(image, dict) and image.get("type", "output") == "output"
        ]
        if not files:
            raise ProviderError("The ComfyUI workflow produced no image.")
        result = []
        for image in files:
            params = {k: str(image.get(k) or "") for k in ("filename", "subfolder", "type")}
            response = await self.http.send("GET", "/view", params=params, idempotent=True)
            if response.status_code >= 400:
                raise error_for_status(self.name, response)
            result.append(await output_image(response.content))
        return result

    async def cancel(self, request_id: str) -> None:
        await self.http.send("POST", "/queue", json={"delete": [request_id]})
        await self.http.send("POST", "/interrupt", json={"prompt_id": request_id})

    async def aclose(self) -> None:
        await self.http.aclose()


class _Watch:
    """What the websocket told us about one prompt."""

    def __init__(self, progress: ProgressCallback) -> None:
        self.progress = progress
        self.prompt_id: str | None = None
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()
        self.reported = False

    async def handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return
        data = message["data"]
        if self.prompt_id is None or data.get("prompt_id") != self.prompt_id:
            return
        kind = message.get("type")
        if kind == "progress":
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(maximum, int | float) and maximum > 0:
                self.reported = True
                await self.progress(10 + 80 * min(1.0, value / maximum))
        elif (kind == "executing" and data.get("node") is None) or kind in (
            "execution_success",
            "execution_error",
            "execution_interrupted",
        ):
            self.finished.set()
