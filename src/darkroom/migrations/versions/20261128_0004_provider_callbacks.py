"""provider callbacks (Replicate webhooks reach the waiting worker through the database)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 03:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import darkroom.models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_callbacks",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", darkroom.models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "request_id", name=op.f("pk_provider_callbacks")),
    )
    with op.batch_alter_table("provider_callbacks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_provider_callbacks_received_at"), ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("provider_callbacks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provider_callbacks_received_at"))
    op.drop_table("provider_callbacks")
