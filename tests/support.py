"""Helpers shared by the tests: image factories, sign-up, waiting for tasks."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from typing import Any

import httpx
from PIL import Image, ImageDraw

_counter = itertools.count()


def photo(width: int = 320, height: int = 240, fmt: str = "JPEG", **save: Any) -> bytes:
    """A synthetic photo: a sky-to-ground gradient with a red 'subject' in the middle."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):
        t = y / max(height - 1, 1)
        draw.line([(0, y), (width, y)], fill=(int(90 + 100 * t), int(140 + 60 * t), int(220 - 120 * t)))
    draw.ellipse(
        [width * 0.3, height * 0.2, width * 0.7, height * 0.9],
        fill=(200, 40, 40),
        outline=(40, 20, 10),
        width=3,
    )
    draw.rectangle([width * 0.05, height * 0.7, width * 0.2, height * 0.95], fill=(30, 120, 40))
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter)}-{time.time_ns()}@example.com"


async def register(
    client: httpx.AsyncClient, email: str | None = None, password: str = "correct horse 1"
) -> dict[str, str]:
    response = await client.post(
        "/api/auth/register", json={"email": email or unique_email(), "password": password}
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['data']['accessToken']}"}


async def submit(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    task_type: str,
    images: list[bytes] | None = None,
    parameters: dict[str, Any] | str | None = None,
    names: list[str] | None = None,
) -> httpx.Response:
    images = [photo()] if images is None else images
    names = names or [f"photo{i}.jpg" for i in range(len(images))]
    files = [("files", (name, data, "image/jpeg")) for name, data in zip(names, images, strict=True)]
    data = {"taskType": task_type}
    if parameters is not None:
        data["parameters"] = parameters if isinstance(parameters, str) else json.dumps(parameters)
    return await client.post("/api/tasks", headers=headers, data=data, files=files)


async def wait_for(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    task_id: str,
    statuses: tuple[str, ...] = ("completed", "failed", "canceled"),
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/tasks/{task_id}", headers=headers)
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()["data"]
        if task["status"] in statuses:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {task['status']} after {timeout}s")
        await asyncio.sleep(0.1)


def open_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


async def stored_task(ctx: Any, task_id: str) -> Any:
    """The task's row as the database holds it now (a ``darkroom.models.Task``)."""
    from darkroom.models import Task

    async with ctx.db.transaction(write=False) as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task


async def stored_events(ctx: Any, task_id: str) -> list[tuple[int, str, int]]:
    """The task's events as (id, status, progress), oldest first."""
    from sqlalchemy import select

    from darkroom.models import TaskEvent

    async with ctx.db.transaction(write=False) as session:
        rows = await session.execute(
            select(TaskEvent.id, TaskEvent.status, TaskEvent.progress)
            .where(TaskEvent.task_id == task_id)
            .order_by(TaskEvent.id)
        )
        return [(int(i), str(st), int(pr)) for i, st, pr in rows]
