"""event positions in commit order (PostgreSQL)

A task event's id comes from a sequence when the row is inserted, and on PostgreSQL transactions
commit in any order: one that took id 10 can commit after one that took id 11. A stream that had
read 11 asked for ids above 11 from then on and never delivered 10 (nor did the table tail wake
anyone for it). From this revision every event gets a ``position`` when its transaction commits:
a deferred constraint trigger takes a transaction-level advisory lock (held until the commit
ends) and numbers the transaction's events from ``task_event_position_seq``. Positions are
therefore given in commit order, and once position N is visible every smaller one is too.
Streams, the tail and "latest" read positions on PostgreSQL. Existing events keep their id as
their position and new positions continue above them, so a client's Last-Event-ID stays valid.

SQLite has one writer at a time, so ids are in commit order there: the column stays NULL and
streams keep reading ids (no extra write per event).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 10:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pg_advisory_xact_lock's key (7170005: any fixed bigint that nothing else locks)
_FUNCTION = """
CREATE FUNCTION darkroom_number_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Held until this transaction's commit has ended: the next committing transaction numbers
    -- its events only after this one's are visible.
    PERFORM pg_advisory_xact_lock(7170005);
    UPDATE task_events SET position = nextval('task_event_position_seq') WHERE id = NEW.id;
    RETURN NULL;
END $$
"""
_TRIGGER = """
CREATE CONSTRAINT TRIGGER task_events_position AFTER INSERT ON task_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION darkroom_number_task_event()
"""


def upgrade() -> None:
    with op.batch_alter_table("task_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE task_event_position_seq AS bigint")
    op.execute("UPDATE task_events SET position = id")
    op.execute(
        "SELECT setval('task_event_position_seq', COALESCE((SELECT max(id) FROM task_events), 0) + 1, false)"
    )
    op.create_index("ix_task_events_user_id_position", "task_events", ["user_id", "position"])
    op.create_index("ix_task_events_position", "task_events", ["position"])
    op.execute(_FUNCTION)
    op.execute(_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER task_events_position ON task_events")
        op.execute("DROP FUNCTION darkroom_number_task_event()")
        op.drop_index("ix_task_events_position", table_name="task_events")
        op.drop_index("ix_task_events_user_id_position", table_name="task_events")
        op.execute("DROP SEQUENCE task_event_position_seq")
    with op.batch_alter_table("task_events", schema=None) as batch_op:
        batch_op.drop_column("position")
