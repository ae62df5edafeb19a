"""Real processes for the scale-out tests: API servers, `darkroom worker`s, a private Redis,
RabbitMQ queues of our own, and helpers to drive them over HTTP.

Every service is found or started here; when one cannot be reached the test fails (no skip).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server import free_port, server_env

RABBITMQ_URL = os.environ.get("DARKROOM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

FAST = {
    "DARKROOM_TASK_LEASE_SECONDS": "3",
    "DARKROOM_REAPER_INTERVAL_SECONDS": "0.5",
    "DARKROOM_REDISPATCH_AFTER_SECONDS": "2",
    "DARKROOM_AUTO_MIGRATE": "false",
}


class Proc:
    """A `darkroom` subcommand in its own process group, logging to a file in the data dir."""

    def __init__(self, data_dir: Path, args: list[str], env: dict[str, str], name: str) -> None:
        self.args = args
        self.env = env
        self.log = data_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self._out = open(self.log, "ab")  # noqa: SIM115 - kept open while the process runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "darkroom", *self.args],
            env=self.env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and its model processes, like a machine losing power."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._out.close()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class ApiServer(Proc):
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        super().__init__(
            data_dir, ["serve", "--no-workers", "--port", str(self.port)], env, f"api-{self.port}"
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ApiServer:
        super().start()
        wait_http(f"{self.url}/healthz", self, timeout)
        return self


def wait_http(url: str, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"process exited: {proc.tail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer: {proc.tail()}")


def cluster_env(data_dir: Path, broker_url: str, queue: str, **extra: str) -> dict[str, str]:
    return server_env(data_dir, DARKROOM_BROKER_URL=broker_url, DARKROOM_BROKER_QUEUE=queue, **FAST, **extra)


class PrivateRedis:
    """A redis-server of our own on a free port, so a test may stop and start it at will."""

    def __init__(self, data_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(
            [self.binary, *args, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def delete_rabbitmq_queues(url: str, queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
    finally:
        connection.close()


# -- driving the API -----------------------------------------------------------------------------


def register(client: httpx.Client, email: str) -> dict[str, str]:
    r = client.post("/api/auth/register", json={"email": email, "password": "cluster-pass-1"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['data']['accessToken']}"}


def create(client: httpx.Client, headers: dict[str, str], task_type: str, image: bytes, **params: Any) -> str:
    import json

    data = {"taskType": task_type}
    if params:
        data["parameters"] = json.dumps(params)
    r = client.post(
        "/api/tasks", headers=headers, data=data, files=[("files", ("photo.jpg", image, "image/jpeg"))]
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def wait_all(
    client: httpx.Client, headers: dict[str, str], ids: list[str], timeout: float, procs: list[Proc]
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = [client.get(f"/api/tasks/{i}", headers=headers).json()["data"] for i in ids]
        if all(t["status"] in {"completed", "failed", "canceled"} for t in tasks):
            return tasks
        if time.monotonic() > deadline:
            logs = "\n".join(p.tail(1500) for p in procs)
            raise AssertionError(f"{[(t['taskNo'], t['status'], t['progress']) for t in tasks]}\n{logs}")
        time.sleep(0.2)


def assert_charged_once(client: httpx.Client, headers: dict[str, str], tasks: list[dict[str, Any]]) -> None:
    ledger = client.get("/api/credits?limit=100", headers=headers).json()["data"]
    for task in tasks:
        kinds = sorted(t["type"] for t in ledger["transactions"] if t["taskId"] == task["id"])
        assert kinds == ["capture", "reserve"], (task["taskNo"], kinds)
    assert ledger["balance"] == sum(t["amount"] for t in ledger["transactions"])


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb + pg_ctl) on a free port in a temporary directory,
    so a test can stop and start it; never the shared server. As root, it runs as user postgres
    (initdb refuses root)."""

    def __init__(self) -> None:
        import glob
        import tempfile

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries are missing (apt-get install postgresql)")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="darkroom-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/darkroom"

    def _run(self, *args: str) -> None:
        r = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {r.stdout}\n{r.stderr}")

    def init(self) -> PrivatePostgres:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.start()
        from tests.database import create_database

        base = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        created = create_database(base=base, prefix="darkroom")
        self.url = created
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)
