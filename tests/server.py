"""Run a real ``darkroom serve`` process on loopback for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKROOM_", "DATABASE_URL", "JWT_"))}
    env.update(
        {
            "DARKROOM_DATA_DIR": str(data_dir),
            "JWT_SECRET": "e2e-secret-" + "y" * 40,
            "APP_ENV": "test",
            "DARKROOM_LOG_LEVEL": "warning",
        }
    )
    if os.environ.get("DATABASE_URL"):  # the test's own PostgreSQL database (tests/database.py)
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    env.update(extra)
    return env


def darkroom(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "darkroom", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


class Server:
    def __init__(self, data_dir: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.env = server_env(data_dir, PORT=str(self.port), **extra_env)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Server:
        self.data_log = open(self.log, "ab")  # noqa: SIM115 - kept open while the server runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "darkroom", "serve"],
            env=self.env,
            stdout=self.data_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: the server and its model processes, like a power cut."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.data_log.close()

    def kill_main_only(self) -> None:
        """SIGKILL only the server process; its children are left to notice on their own."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.data_log.close()

    def session_processes(self) -> list[int]:
        """Pids still alive in the server's session (it was started as a session leader)."""
        assert self.proc is not None
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[0] is the state; fields[3] is the session id
            if int(fields[3]) == self.proc.pid and fields[0] != "Z":
                alive.append(int(stat.parent.name))
        return alive

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.data_log.close()
