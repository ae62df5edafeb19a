"""Migrations leave a SQLite database ready for concurrent use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
