from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from darkroom.credits import service
from darkroom.credits.schemas import CreditsRead, CreditTransactionRead
from darkroom.deps import CurrentUser, Session
from darkroom.schemas import PageEnvelope, Pagination, ok

router = APIRouter(prefix="/api", tags=["credits"])


@router.get("/credits", response_model=PageEnvelope[CreditsRead])
async def get_credits(
    user: CurrentUser,
    session: Session,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The balance and the ledger, newest first."""
    balance = await service.balance_of(session, user.id)
    page = await service.ledger(session, user.id, limit=limit, offset=offset)
    transactions = [
        CreditTransactionRead(
            id=t.id,
            type=t.transaction_type,
            amount=t.amount,
            balance_before=t.balance_before,
            balance_after=t.balance_after,
            task_id=t.task_id,
            description=t.description,
            created_at=t.created_at,
        )
        for t in page.items
    ]
    data = CreditsRead(balance=balance, transactions=transactions).model_dump(by_alias=True, mode="json")
    return ok(data, pagination=Pagination.of(page.total, limit, offset).model_dump(by_alias=True))
