"""Real Dramatiq on Redis and RabbitMQ, API and workers as separate processes.

Runs on SQLite (one file shared by the processes) or, under DARKROOM_TEST_DATABASE=postgres, on
the test's PostgreSQL database.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.cluster import (
    RABBITMQ_URL,
    ApiServer,
    PrivateRedis,
    Proc,
    assert_charged_once,
    cluster_env,
    create,
    delete_rabbitmq_queues,
    register,
    wait_all,
)
from tests.database import execute
from tests.server import darkroom
from tests.support import photo

pytestmark = pytest.mark.slow

BURST = 16


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self.cleanups: list[object] = []

    def broker(self, kind: str) -> tuple[str, str]:
        queue = f"darkroom_test_{secrets.token_hex(4)}"
        if kind == "redis":
            redis = PrivateRedis(self.tmp_path).start()
            self.cleanups.append(redis.stop)
            return redis.url, queue
        self.cleanups.append(lambda: delete_rabbitmq_queues(RABBITMQ_URL, queue))
        return RABBITMQ_URL, queue

    def migrate(self, env: dict[str, str]) -> None:
        r = darkroom("migrate", env=env)
        assert r.returncode == 0, r.stderr

    def api(self, env: dict[str, str]) -> ApiServer:
        server = ApiServer(self.tmp_path, env)
        self.procs.append(server)
        return server.start()

    def worker(self, env: dict[str, str], name: str, concurrency: int = 1) -> Proc:
        proc = Proc(self.tmp_path, ["worker", "--concurrency", str(concurrency)], env, name)
        self.procs.append(proc)
        return proc.start()

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        for cleanup in reversed(self.cleanups):
            cleanup()  # type: ignore[operator]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()


def _db(env: dict[str, str]) -> str | None:
    return env.get("DATABASE_URL")


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_worker_killed_mid_task_another_worker_finishes_it_once(
    cluster: Cluster, tmp_path: Path, broker: str
) -> None:
    url, queue = cluster.broker(broker)
    env = cluster_env(tmp_path, url, queue)
    cluster.migrate(env)
    api = cluster.api(env)
    workers = [cluster.worker(env, "worker-1"), cluster.worker(env, "worker-2")]
    big = photo(2400, 1800, quality=90)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        headers = register(client, f"kill-{broker}@example.com")
        ids = [create(client, headers, "style_transfer", big) for _ in range(2)]  # one per worker
        # Find a task a worker is busy with (the model is at work), and kill that worker.
        deadline = time.monotonic() + 120
        while True:
            rows = execute(
                _db(env),
                tmp_path,
                "SELECT id, lease_owner FROM ai_tasks WHERE status = 'processing' AND progress > 5",
            )
            if rows:
                break
            assert time.monotonic() < deadline, [w.tail() for w in workers]
            time.sleep(0.05)
        victim_task, owner = rows[0][0], rows[0][1]
        victim = next(w for w in workers if owner.split(":")[1] == str(w.pid))
        victim.kill()
        survivor = next(w for w in workers if w is not victim)

        tasks = wait_all(client, headers, ids, 240, cluster.procs)
        assert [t["status"] for t in tasks] == ["completed"] * 2, [
            (t["errorCode"], t["errorMessage"]) for t in tasks
        ]
        assert_charged_once(client, headers, tasks)
        for task in tasks:
            assert len(task["resultUrls"]) == 1
        assert survivor.alive()
    claims = execute(_db(env), tmp_path, f"SELECT claim_count FROM ai_tasks WHERE id = '{victim_task}'")  # noqa: S608
    assert claims[0][0] >= 2  # claimed by the victim, then again after its lease expired
    report = darkroom("doctor", env=env)
    assert report.returncode == 0, report.stdout + report.stderr


def test_broker_down_creation_succeeds_and_tasks_run_when_it_is_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    redis = PrivateRedis(tmp_path).start()
    cluster.cleanups.append(redis.stop)
    env = cluster_env(tmp_path, redis.url, f"darkroom_test_{secrets.token_hex(4)}")
    cluster.migrate(env)
    api = cluster.api(env)
    cluster.worker(env, "worker-1", concurrency=2)
    with httpx.Client(base_url=api.url, timeout=60) as client:
        headers = register(client, "outage@example.com")
        redis.stop()
        ids = [create(client, headers, "color_enhancement", photo(64, 48)) for _ in range(3)]
        for _ in range(2):  # now, and a moment later: nothing can reach the worker
            states = [client.get(f"/api/tasks/{i}/status", headers=headers).json()["data"] for i in ids]
            logs = "\n".join(p.tail(2000) for p in cluster.procs)
            assert [s["status"] for s in states] == ["pending"] * 3, f"{states}\n{logs}"
            time.sleep(1)
        redis.start()  # same port: the broker is back, empty (the sends were lost)
        tasks = wait_all(client, headers, ids, 120, cluster.procs)
        assert [t["status"] for t in tasks] == ["completed"] * 3
        assert_charged_once(client, headers, tasks)
    api_log = api.tail(20000)
    assert "could not send the task to the broker" in api_log, api_log
    report = darkroom("doctor", env=env)
    assert report.returncode == 0, report.stdout + report.stderr


def test_two_apis_two_workers_burst_every_task_completes_exactly_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    url, queue = cluster.broker("redis")
    env = cluster_env(tmp_path, url, queue, DARKROOM_SIGNUP_CREDITS="100")
    cluster.migrate(env)
    apis = [cluster.api(env), cluster.api(env)]
    cluster.worker(env, "worker-1", concurrency=2)
    cluster.worker(env, "worker-2", concurrency=2)
    users = []
    for n, api in enumerate(apis):
        with httpx.Client(base_url=api.url, timeout=30) as client:
            users.append(register(client, f"burst{n}@example.com"))
    image = photo(96, 64)
    task_types = ["color_enhancement", "background_removal"]

    def submit(i: int) -> tuple[int, str]:
        api, headers = apis[i % 2], users[(i // 2) % 2]
        with httpx.Client(base_url=api.url, timeout=60) as client:
            return (i // 2) % 2, create(client, headers, task_types[i % 2], image)

    with ThreadPoolExecutor(max_workers=8) as pool:
        submitted = list(pool.map(submit, range(BURST)))
    with httpx.Client(base_url=apis[0].url, timeout=30) as client:
        for user, headers in enumerate(users):
            ids = [task_id for owner, task_id in submitted if owner == user]
            tasks = wait_all(client, headers, ids, 240, cluster.procs)
            assert [t["status"] for t in tasks] == ["completed"] * len(ids)
            assert_charged_once(client, headers, tasks)
            assert all(len(t["resultUrls"]) == 1 for t in tasks)
    outputs = execute(
        env.get("DATABASE_URL"), tmp_path, "SELECT count(*) FROM task_files WHERE role = 'output'"
    )
    assert outputs[0][0] == BURST  # one output each: no task ran to completion twice
    owners = execute(
        env.get("DATABASE_URL"), tmp_path, "SELECT count(*) FROM ai_tasks WHERE status = 'completed'"
    )
    assert owners[0][0] == BURST
    report = darkroom("doctor", env=env)
    assert report.returncode == 0, report.stdout + report.stderr
    assert os.path.exists(tmp_path / "files")
