"""The admin CLI against a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.database import execute
from tests.server import darkroom, server_env

pytestmark = pytest.mark.slow


def test_users_credits_and_doctor(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    r = darkroom(
        "users",
        "create",
        "Admin@Example.com",
        "--password",
        "admin-pass-1",
        "--credits",
        "50",
        "--admin",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "admin@example.com" in r.stdout and "50 credits" in r.stdout

    r = darkroom("users", "create", "admin@example.com", "--password", "admin-pass-1", env=env)
    assert r.returncode != 0 and "already exists" in r.stderr

    r = darkroom("credits", "grant", "admin@example.com", "25", "--reason", "promo", env=env)
    assert r.returncode == 0 and "balance now 75" in r.stdout
    r = darkroom("credits", "grant", "--reason", "oops", "--", "admin@example.com", "-100", env=env)
    assert r.returncode != 0 and "balance is 75" in r.stderr
    r = darkroom("credits", "grant", "nobody@example.com", "5", "--reason", "x", env=env)
    assert r.returncode != 0 and "no user" in r.stderr

    r = darkroom("doctor", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout) == {"balanceMismatches": [], "stuckTasks": []}

    # Break the invariant behind the ledger's back: doctor must notice.
    execute(env.get("DATABASE_URL"), tmp_path, "UPDATE user_credits SET credits = credits + 1")
    r = darkroom("doctor", env=env)
    assert r.returncode == 1
    assert "admin@example.com: balance 76 != ledger sum 75" in r.stdout


def test_migrate_command(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    r = darkroom("migrate", env=env)
    assert r.returncode == 0, r.stderr
    rows = execute(env.get("DATABASE_URL"), tmp_path, "SELECT version_num FROM alembic_version")
    assert len(rows) == 1


def test_production_refuses_placeholder_secret(tmp_path: Path) -> None:
    env = server_env(tmp_path, APP_ENV="production", JWT_SECRET="your-super-secret-jwt-key")
    r = darkroom("migrate", env=env)
    assert r.returncode != 0 and "JWT_SECRET" in r.stderr


def test_development_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    del env["JWT_SECRET"]
    assert darkroom("users", "create", "a@example.com", "--password", "password-1", env=env).returncode == 0
    secret = (tmp_path / "jwt_secret").read_text()
    assert len(secret) > 40
    assert darkroom("users", "create", "b@example.com", "--password", "password-1", env=env).returncode == 0
    assert (tmp_path / "jwt_secret").read_text() == secret


@pytest.mark.parametrize(
    "command", [["doctor"], ["users", "create", "first@example.com", "--password", "pass-word-1"]]
)
def test_admin_commands_work_before_the_data_dir_exists(tmp_path: Path, command: list[str]) -> None:
    """A fresh machine, the data dir not made yet (no ``serve`` or ``migrate`` run): the command
    makes it, as those do, instead of failing with SQLite's 'unable to open database file'."""
    env = server_env(tmp_path / "not-yet" / "data")
    r = darkroom(*command, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
