from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, utcnow


class UserCredits(Base):
    """The spendable balance. Always equal to the sum of the user's ledger (``darkroom doctor``)."""

    __tablename__ = "user_credits"
    __table_args__ = (
        CheckConstraint("credits >= 0", name="credits_non_negative"),
        CheckConstraint("total_earned >= 0", name="earned_non_negative"),
        CheckConstraint("total_spent >= 0", name="spent_non_negative"),
    )

    user_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    credits: Mapped[int] = mapped_column(default=0)
    total_earned: Mapped[int] = mapped_column(default=0)
    total_spent: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
