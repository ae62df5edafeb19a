"""drop the task_id indexes that a unique constraint already covers

``task_files`` is unique on (task_id, role, attempt, position) and ``task_attempts`` on
(task_id, attempt): both unique indexes start with ``task_id``, so they serve every lookup by
task (and the cascade from ``ai_tasks``) as the single-column indexes did. Those were written on
every insert of a file or an attempt for nothing: three index b-trees less to change per task
(bench figure 3's write-ahead log, tenth pass in bench/FINDINGS.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 16:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (("task_files", "ix_task_files_task_id"), ("task_attempts", "ix_task_attempts_task_id"))


def upgrade() -> None:
    for table, index in _INDEXES:
        op.drop_index(index, table_name=table)


def downgrade() -> None:
    for table, index in _INDEXES:
        op.create_index(index, table, ["task_id"], unique=False)
