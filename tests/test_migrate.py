"""Migrations leave a SQLite database ready for concurrent use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from darkroom import migrate


def test_a_freshly_migrated_sqlite_database_is_in_wal_mode(tmp_path: Path) -> None:
    # Switching to WAL later, while the server's first requests and background readers open
    # their connections, needs an exclusive lock and failed as "database is locked" (a 503).
    path = tmp_path / "fresh.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")  # a second start finds nothing to do
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        heads = db.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"users", "user_credits", "ai_tasks", "credit_transactions", "task_events", "uploads"} <= tables
    head = ScriptDirectory.from_config(
        migrate.alembic_config(f"sqlite+aiosqlite:///{path}")
    ).get_current_head()
    assert heads == [(head,)]


def test_lookups_by_task_use_the_unique_indexes_after_0006(tmp_path: Path) -> None:
    """Migration 0006 drops the single-column task_id indexes of task_files and task_attempts: the
    unique indexes that start with task_id serve those lookups, and a downgrade brings them back."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"

    def state() -> tuple[set[str], list[str]]:
        with sqlite3.connect(tmp_path / "db.sqlite") as db:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            plans = [
                str(db.execute(query).fetchall())
                for query in (
                    "EXPLAIN QUERY PLAN SELECT * FROM task_files WHERE task_id = 'x'",
                    "EXPLAIN QUERY PLAN SELECT * FROM task_attempts WHERE task_id = 'x'",
                )
            ]
        return names, plans

    migrate.upgrade(url, "0005")
    names, _ = state()
    assert {"ix_task_files_task_id", "ix_task_attempts_task_id"} <= names
    migrate.upgrade(url, "0006")
    names, plans = state()
    assert not {"ix_task_files_task_id", "ix_task_attempts_task_id"} & names
    assert all("USING INDEX sqlite_autoindex" in plan and "task_id=?" in plan for plan in plans), plans
    command.downgrade(migrate.alembic_config(url), "0005")
    names, _ = state()
    assert {"ix_task_files_task_id", "ix_task_attempts_task_id"} <= names
