from __future__ import annotations

from datetime import datetime

from darkroom.schemas import CamelModel


class CreditTransactionRead(CamelModel):
    id: int
    type: str
    amount: int
    balance_before: int
    balance_after: int
    task_id: str | None
    description: str | None
    created_at: datetime


class CreditsRead(CamelModel):
    balance: int
    transactions: list[CreditTransactionRead]
