from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
LedgerId = BigInteger().with_variant(Integer(), "sqlite")


class CreditTransaction(Base):
    """Append-only ledger row. ``amount`` is signed; the balance is the running sum.

    ``transaction_type``: grant | reserve | capture | release | adjust. A reservation moves
    ``amount`` out of the spendable balance; capture records that it was spent (amount 0);
    release gives it back. ``settlement_key`` is unique, so each task attempt is reserved at
    most once and settled (captured *or* released) at most once, enforced by the database.
    """

    __tablename__ = "credit_transactions"
    __table_args__ = (Index("ix_credit_transactions_user_created", "user_id", "id"),)

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    task_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("ai_tasks.id", ondelete="SET NULL"), index=True
    )
    transaction_type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int]
    balance_before: Mapped[int]
    balance_after: Mapped[int]
    description: Mapped[str | None] = mapped_column(String(500))
    settlement_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
