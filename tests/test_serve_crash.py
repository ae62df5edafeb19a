"""A real `darkroom serve`, killed with SIGKILL mid-task, restarted: every task completes, once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import Server, darkroom
from tests.support import photo

pytestmark = pytest.mark.slow

FAST_RECOVERY = {
    "DARKROOM_TASK_LEASE_SECONDS": "3",
    "DARKROOM_REAPER_INTERVAL_SECONDS": "0.5",
    "DARKROOM_WORKERS": "2",
}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _wait(
    client: httpx.Client, headers: dict[str, str], ids: list[str], until: set[str], timeout: float
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = [client.get(f"/api/tasks/{i}", headers=headers).json()["data"] for i in ids]
        if all(t["status"] in until for t in tasks):
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError([(t["taskNo"], t["status"], t["progress"]) for t in tasks])
        time.sleep(0.2)


def test_sigkill_mid_task_then_restart_finishes_everything_once(
    tmp_path: Path, servers: list[Server]
) -> None:
    first = Server(tmp_path, **FAST_RECOVERY).start()
    servers.append(first)
    with httpx.Client(base_url=first.url, timeout=30) as client:
        r = client.post("/api/auth/register", json={"email": "crash@example.com", "password": "crash-test-1"})
        headers = {"Authorization": f"Bearer {r.json()['data']['accessToken']}"}
        big = photo(2400, 1800, quality=90)
        ids = []
        for task_type in ("style_transfer", "background_removal", "style_transfer", "color_enhancement"):
            files = [("files", ("big.jpg", big, "image/jpeg"))]
            r = client.post("/api/tasks", headers=headers, data={"taskType": task_type}, files=files)
            assert r.status_code == 201, r.text
            ids.append(r.json()["data"]["id"])
        # Kill while a model is at work on a task.
        deadline = time.monotonic() + 60
        while True:
            states = [client.get(f"/api/tasks/{i}/status", headers=headers).json()["data"] for i in ids]
            if any(s["status"] == "processing" and s["progress"] > 5 for s in states):
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
    first.kill()
    assert sum(s["status"] != "completed" for s in states) >= 2, states

    second = Server(tmp_path, **FAST_RECOVERY).start()
    servers.append(second)
    with httpx.Client(base_url=second.url, timeout=30) as client:
        tasks = _wait(client, headers, ids, {"completed", "failed", "canceled"}, 180)
        assert [t["status"] for t in tasks] == ["completed"] * 4, [
            (t["status"], t["errorMessage"]) for t in tasks
        ]
        ledger = client.get("/api/credits?limit=100", headers=headers).json()["data"]
        for task in tasks:
            kinds = sorted(t["type"] for t in ledger["transactions"] if t["taskId"] == task["id"])
            assert kinds == ["capture", "reserve"], (task["taskNo"], kinds)
            assert len(task["resultUrls"]) == 1
            assert client.get(task["resultUrls"][0]).status_code == 200
        cost = sum(t["cost"] for t in tasks)
        assert ledger["balance"] == 20 - cost == sum(t["amount"] for t in ledger["transactions"])
    second.stop()
    report = darkroom("doctor", env=second.env)
    assert report.returncode == 0, report.stdout + report.stderr


def test_model_processes_exit_when_the_server_is_killed(tmp_path: Path, servers: list[Server]) -> None:
    server = Server(tmp_path, **FAST_RECOVERY).start()
    servers.append(server)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post(
            "/api/auth/register", json={"email": "orphan@example.com", "password": "orphan-test-1"}
        )
        headers = {"Authorization": f"Bearer {r.json()['data']['accessToken']}"}
        files = [("files", ("p.jpg", photo(1600, 1200), "image/jpeg"))]
        r = client.post("/api/tasks", headers=headers, data={"taskType": "style_transfer"}, files=files)
        task_id = r.json()["data"]["id"]
        _wait(client, headers, [task_id], {"completed"}, 60)
    assert len(server.session_processes()) >= 2  # the server and its model process (kept for reuse)
    server.kill_main_only()
    deadline = time.monotonic() + 30
    while server.session_processes():
        assert time.monotonic() < deadline, f"left behind: {server.session_processes()}"
        time.sleep(0.2)
