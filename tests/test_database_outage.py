"""PostgreSQL restarted under load (a private cluster, never the shared server): the API answers
503 `service_unavailable` meanwhile and writes nothing; workers reconnect; nothing is lost and
nothing is charged twice."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import (
    ApiServer,
    PrivatePostgres,
    PrivateRedis,
    Proc,
    assert_charged_once,
    cluster_env,
    create,
    register,
    wait_all,
)
from tests.database import execute
from tests.server import darkroom
from tests.support import photo

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres().init()
    yield pg
    pg.destroy()


def test_postgres_restart_under_load(tmp_path: Path, postgres: PrivatePostgres) -> None:
    redis = PrivateRedis(tmp_path).start()
    env = cluster_env(
        tmp_path,
        redis.url,
        f"darkroom_test_{secrets.token_hex(4)}",
        DATABASE_URL=postgres.url,
        DARKROOM_SIGNUP_CREDITS="100",
    )
    procs: list[Proc] = []
    try:
        assert darkroom("migrate", env=env).returncode == 0
        api = ApiServer(tmp_path, env).start()
        procs.append(api)
        procs.append(Proc(tmp_path, ["worker", "--concurrency", "2"], env, "worker").start())
        with httpx.Client(base_url=api.url, timeout=30) as client:
            headers = register(client, "pg-restart@example.com")
            medium = photo(1600, 1200, quality=90)
            ids = [create(client, headers, "style_transfer", medium) for _ in range(3)]
            ids += [create(client, headers, "color_enhancement", photo(64, 48)) for _ in range(3)]
            deadline = time.monotonic() + 60
            while not execute(postgres.url, tmp_path, "SELECT 1 FROM ai_tasks WHERE status = 'processing'"):
                assert time.monotonic() < deadline
                time.sleep(0.05)

            postgres.stop()
            me = client.get("/api/me", headers=headers)
            assert me.status_code == 503, me.text
            assert me.json() == {
                "success": False,
                "code": "service_unavailable",
                "message": "The database is unavailable; try again shortly.",
            }
            r = client.post(
                "/api/tasks",
                headers=headers,
                data={"taskType": "color_enhancement"},
                files=[("files", ("a.jpg", photo(64, 48), "image/jpeg"))],
            )
            assert r.status_code == 503 and r.json()["code"] == "service_unavailable"
            assert client.get("/readyz").status_code == 503
            time.sleep(3)  # past a lease renewal: the worker meets the outage too
            postgres.start()

            deadline = time.monotonic() + 60
            while client.get("/api/me", headers=headers).status_code != 200:
                assert time.monotonic() < deadline, api.tail()
                time.sleep(0.2)
            ids += [create(client, headers, "color_enhancement", photo(64, 48)) for _ in range(2)]
            tasks = wait_all(client, headers, ids, 240, procs)
            assert [t["status"] for t in tasks] == ["completed"] * len(ids), [
                (t["errorCode"], t["errorMessage"]) for t in tasks
            ]
            assert_charged_once(client, headers, tasks)
        count = execute(postgres.url, tmp_path, "SELECT count(*) FROM ai_tasks")
        assert count[0][0] == len(ids)  # the request refused during the outage wrote nothing
        report = darkroom("doctor", env=env)
        assert report.returncode == 0, report.stdout + report.stderr
    finally:
        for proc in procs:
            proc.stop()
        redis.stop()
