"""``darkroom submit`` and ``darkroom tasks`` as processes, against a real ``darkroom serve``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import Server
from tests.support import open_image, photo, unique_email

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("cli")).start()
    yield s
    s.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
    return subprocess.run(
        [sys.executable, "-m", "darkroom", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def account(server: Server) -> tuple[str, str, str]:
    email, password = unique_email("cli"), "cli-pass-123"
    r = httpx.post(f"{server.url}/api/auth/register", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    return email, password, r.json()["data"]["accessToken"]


def test_submit_wait_saves_results_with_a_token_from_the_environment(server: Server, tmp_path: Path) -> None:
    _, _, token = account(server)
    a, b = tmp_path / "a.jpg", tmp_path / "b.png"
    a.write_bytes(photo(320, 240))
    b.write_bytes(photo(200, 300, "PNG"))
    out = tmp_path / "results"
    env = {"DARKROOM_SERVER": server.url, "DARKROOM_TOKEN": token}
    r = cli(
        "submit", str(a), str(b), "--type", "color_enhancement", "--param", "enhancement=vivid",
        "--param", "strength=0.7", "--wait", "--out", str(out), env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "created" in r.stdout and "completed" in r.stdout
    cost = re.search(r"cost (\d+) (credits?)\b", r.stdout)
    assert cost is not None, r.stdout
    assert cost[2] == ("credit" if cost[1] == "1" else "credits"), r.stdout  # "cost 1 credit"
    saved = sorted(out.iterdir())
    assert [p.suffix for p in saved] == [".jpg", ".png"]
    assert open_image(saved[0].read_bytes()).size == (320, 240)
    assert open_image(saved[1].read_bytes()).size == (200, 300)

    listed = cli("tasks", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "completed" in listed.stdout and "color_enhancement" in listed.stdout and "of 1" in listed.stdout


def test_submit_with_login_reports_a_failed_task(server: Server, tmp_path: Path) -> None:
    email, password, _ = account(server)
    tiny = tmp_path / "tiny.jpg"
    tiny.write_bytes(photo(40, 30))
    r = cli(
        "submit", str(tiny), "--type", "style_transfer", "--server", server.url,
        "--email", email, "--password", password, "--wait",
    )  # fmt: skip
    assert r.returncode == 1
    assert "failed" in r.stderr and "[invalid_input]" in r.stderr and "32px" in r.stderr
    listed = cli(
        "tasks", "--status", "failed", "--server", server.url, "--email", email, "--password", password
    )
    assert "[invalid_input]" in listed.stdout


def test_api_errors_are_shown_with_code_and_message(server: Server, tmp_path: Path) -> None:
    email, _, token = account(server)
    img = tmp_path / "p.jpg"
    img.write_bytes(photo())
    r = cli("tasks", "--server", server.url, "--email", email, "--password", "wrong-password")
    assert r.returncode == 1 and "[invalid_credentials]" in r.stderr
    r = cli("submit", str(img), "--type", "nope", "--server", server.url, "--token", token)
    assert r.returncode == 1 and "[unknown_task_type]" in r.stderr and "nope" in r.stderr
    r = cli(
        "submit",
        str(img),
        "--type",
        "style_transfer",
        "--param",
        "style=nope",
        "--server",
        server.url,
        "--token",
        token,
    )
    assert r.returncode == 1 and "[invalid_parameter]" in r.stderr
    r = cli(
        "submit",
        str(img),
        "--type",
        "style_transfer",
        "--param",
        "oops",
        "--server",
        server.url,
        "--token",
        token,
    )
    assert r.returncode == 2 and "key=value" in r.stderr
    r = cli("tasks", "--server", server.url, "--token", "not-a-token")
    assert r.returncode == 1 and "[invalid_token]" in r.stderr
    r = cli("tasks", "--server", "http://127.0.0.1:9", "--token", token)
    assert r.returncode == 1 and "[connection_error]" in r.stderr
    r = cli("tasks", "--server", server.url)
    assert r.returncode == 2 and "--token" in r.stderr
