from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.models.base import Base, utcnow


class ProviderCallback(Base):
    """A verified provider callback (a Replicate webhook), kept until the waiting run reads it.

    The database is the one thing every process shares: the API process that receives the webhook
    writes it here, and the worker waiting on that request — in whatever process — reads it.
    """

    __tablename__ = "provider_callbacks"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
