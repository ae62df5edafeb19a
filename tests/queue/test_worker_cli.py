"""`darkroom worker` refuses to start without a broker, and with a broker URL it can't use."""

from __future__ import annotations

from pathlib import Path

from tests.server import darkroom, server_env


def test_worker_needs_a_broker(tmp_path: Path) -> None:
    r = darkroom("worker", env=server_env(tmp_path))
    assert r.returncode != 0 and "DARKROOM_BROKER_URL" in r.stderr


def test_worker_refuses_an_unknown_broker_scheme(tmp_path: Path) -> None:
    r = darkroom("worker", env=server_env(tmp_path, DARKROOM_BROKER_URL="kafka://127.0.0.1:9092"))
    assert r.returncode != 0 and "redis:// or amqp://" in r.stderr
