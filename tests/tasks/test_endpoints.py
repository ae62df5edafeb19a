"""``POST /api/tasks`` is served by a plain Starlette route in front of FastAPI's (bench figure 3):
its answers must be exactly what the documented FastAPI route would give."""

from __future__ import annotations

from typing import Any

from darkroom.schemas import Envelope
from darkroom.tasks.endpoints import create_route
from darkroom.tasks.schemas import TaskRead
from tests.conftest import AppFactory
from tests.doubles import ScriptedProvider
from tests.support import register, submit


async def test_the_lean_submit_answers_as_the_documented_route(app_client: AppFactory) -> None:
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider]) as client:
        app: Any = client.app  # type: ignore[attr-defined]
        assert app.router.routes[1].endpoint is create_route().endpoint  # the lean one answers
        headers = await register(client)

        created = await submit(client, headers, "color_enhancement")
        assert created.status_code == 201 and created.headers["content-type"] == "application/json"
        body = created.json()
        # the body is the response model's own dump, as FastAPI's response validation makes it
        assert Envelope[TaskRead].model_validate(body).model_dump(by_alias=True, mode="json") == body
        assert body["message"] == "Task created" and body["data"]["status"] == "pending"

        fetched = (await client.get(f"/api/tasks/{body['data']['id']}", headers=headers)).json()
        assert {k: fetched["data"][k] for k in ("id", "taskNo", "taskType", "inputs")} == {
            k: body["data"][k] for k in ("id", "taskNo", "taskType", "inputs")
        }

        # errors keep their codes: no token, a form without its taskType
        assert (await submit(client, {}, "color_enhancement")).json()["code"] == "unauthorized"
        missing = await client.post("/api/tasks", headers=headers, files={"files": ("a.jpg", b"x")})
        assert (missing.status_code, missing.json()["code"]) == (422, "validation_error")

        spec = (await client.get("/openapi.json")).json()
        assert "multipart/form-data" in spec["paths"]["/api/tasks"]["post"]["requestBody"]["content"]
