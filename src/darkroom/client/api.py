"""A small synchronous client of the JSON API (httpx), used by the CLI commands."""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

FINAL = ("completed", "failed", "canceled")


class ApiError(Exception):
    """An error answer of the server (its ``code`` and ``message``), or no answer at all."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class Client:
    def __init__(self, server: str, token: str | None = None, *, timeout: float = 60) -> None:
        self.server = server.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "darkroom-cli"}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)
        if token:
            self.use_token(token)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def use_token(self, token: str) -> None:
        self.http.headers["Authorization"] = f"Bearer {token}"

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError("connection_error", f"cannot reach {self.server}: {exc}") from None
        return _envelope(response)

    # --- API calls ------------------------------------------------------------------------------

    def login(self, email: str, password: str) -> str:
        data = self._request("POST", "/api/auth/login", json={"email": email, "password": password})
        token: str = data["data"]["accessToken"]
        self.use_token(token)
        return token

    def create_task(self, files: list[Path], task_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
        handles = []
        try:
            parts = []
            for path in files:
                fh = path.open("rb")
                handles.append(fh)
                mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                parts.append(("files", (path.name, fh, mime)))
            form = {"taskType": task_type, "parameters": json.dumps(parameters)}
            data = self._request("POST", "/api/tasks", data=form, files=parts)
        finally:
            for fh in handles:
                fh.close()
        task: dict[str, Any] = data["data"]
        return task

    def task(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._request("GET", f"/api/tasks/{task_id}")["data"]
        return task

    def status(self, task_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self._request("GET", f"/api/tasks/{task_id}/status")["data"]
        return status

    def tasks(self, *, limit: int, offset: int, status: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        page: dict[str, Any] = self._request("GET", "/api/tasks", params=params)
        return page

    def download(self, url: str, target: Path) -> None:
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    _envelope(response)
                tmp = target.with_name(f".{target.name}.part")
                with tmp.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
                tmp.replace(target)
        except httpx.HTTPError as exc:
            raise ApiError("connection_error", f"download failed: {exc}") from None

    # --- following a task ---------------------------------------------------------------------------

    def follow(self, task_id: str, on_change: Callable[[dict[str, Any]], None], *, poll: float = 2.0) -> str:
        """Call ``on_change`` for every change of the task until it is final; returns that status.
        Uses the event stream, resuming with Last-Event-ID when it drops, and polls ``/status``
        when streaming is not possible."""
        last: int | None = None
        failures = 0
        while failures < 3:
            try:
                for event in self._events(task_id, last):
                    failures = 0
                    last = event["seq"]
                    on_change(event)
                    if event["status"] in FINAL and event["kind"] == "status":
                        return str(event["status"])
            except (httpx.HTTPError, ApiError):
                failures += 1
                time.sleep(min(poll, 1.0 * failures))
        while True:  # streaming unavailable: poll
            status = self.status(task_id)
            on_change({"kind": "status", **status})
            if status["status"] in FINAL:
                return str(status["status"])
            time.sleep(poll)

    def _events(self, task_id: str, last: int | None) -> Iterator[dict[str, Any]]:
        headers = {"Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        timeout = httpx.Timeout(self.http.timeout.connect, read=120)
        with connect_sse(
            self.http, "GET", f"/api/tasks/{task_id}/events", headers=headers, timeout=timeout
        ) as source:
            if source.response.status_code != 200:
                source.response.read()
                _envelope(source.response)
            for sse in source.iter_sse():
                if sse.data:
                    yield json.loads(sse.data)


def _envelope(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict) and body.get("success") is not False:
        return body
    if isinstance(body, dict) and "code" in body:
        raise ApiError(str(body["code"]), str(body.get("message", "")), response.status_code)
    raise ApiError(
        f"http_{response.status_code}", response.reason_phrase or "unexpected answer", response.status_code
    )


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v``: the value is JSON when it parses (numbers, true/false), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--param must look like key=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value
