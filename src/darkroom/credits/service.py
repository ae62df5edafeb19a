"""Credits in escrow.

Every change goes through ``_apply``: one conditional UPDATE that refuses to take the balance
below zero (backed by a CHECK constraint), then one append-only ledger row with the balance
before and after. ``settlement_key`` (unique) makes reserve and settle happen at most once per
task attempt, whatever the code path. Never commits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import Integer, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from darkroom.db import DriverStatement, Transaction, execute
from darkroom.errors import NotFound, PaymentRequired
from darkroom.models import CreditTransaction, UserCredits
from darkroom.models.tables import credit_transactions
from darkroom.models.tables import user_credits as balances


@dataclass(frozen=True)
class Page:
    items: list[CreditTransaction]
    total: int


class InsufficientCredits(PaymentRequired):
    def __init__(self, needed: int, balance: int) -> None:
        super().__init__(
            f"This task costs {needed} credits but your balance is {balance}.",
            code="insufficient_credits",
            needed=needed,
            balance=balance,
        )


async def balance_of(session: Transaction, user_id: str) -> int:
    value = (await execute(session, _BALANCE, {"b_user_id": user_id})).scalar()
    if value is None:
        raise NotFound("No such user.", code="user_not_found")
    return int(value)


_INSERT_ENTRY = DriverStatement(insert(credit_transactions))
_BALANCE = DriverStatement(select(balances.c.credits).where(balances.c.user_id == bindparam("b_user_id")))


@functools.cache
def _balance_update(earned: bool, spent: bool) -> DriverStatement:
    """The conditional balance UPDATE … RETURNING, built once per shape (reused statements keep
    their memoized cache key)."""
    amount = bindparam("b_amount", type_=Integer())
    values: dict[str, object] = {"credits": balances.c.credits + amount}
    if earned:
        values["total_earned"] = balances.c.total_earned + amount
    if spent:
        values["total_spent"] = balances.c.total_spent + bindparam("b_spent", type_=Integer())
    return DriverStatement(
        update(balances)
        .where(balances.c.user_id == bindparam("b_user_id"), balances.c.credits + amount >= 0)
        .values(**values)
        .returning(balances.c.credits)
    )


async def _apply(
    session: Transaction,
    user_id: str,
    amount: int,
    kind: str,
    description: str,
    *,
    task_id: str | None = None,
    settlement_key: str | None = None,
    spent: int = 0,
) -> int:
    """Move the balance and append the ledger row (two Core statements); returns the balance after."""
    stmt = _balance_update(amount > 0 and kind in ("grant", "adjust"), bool(spent))
    params: dict[str, object] = {"b_user_id": user_id, "b_amount": amount}
    if spent:
        params["b_spent"] = spent
    after = (await execute(session, stmt, params)).scalar()
    if after is None:
        balance = await balance_of(session, user_id)
        raise InsufficientCredits(-amount, balance)
    await execute(
        session,
        _INSERT_ENTRY,
        {
            "user_id": user_id,
            "task_id": task_id,
            "transaction_type": kind,
            "amount": amount,
            "balance_before": after - amount,
            "balance_after": after,
            "description": description,
            "settlement_key": settlement_key,
        },
    )
    return int(after)


async def grant(
    session: Transaction, user_id: str, amount: int, description: str, *, kind: str = "grant"
) -> int:
    """Add (or with ``kind="adjust"`` and a negative amount, remove) credits outside any task.
    Returns the balance after."""
    return await _apply(session, user_id, amount, kind, description)


async def reserve(
    session: Transaction, user_id: str, task_id: str, attempt: int, amount: int, task_no: str
) -> int:
    """Hold the price of one attempt. 402 when the balance does not cover it."""
    return await _apply(
        session,
        user_id,
        -amount,
        "reserve",
        f"Reserved for task {task_no} (attempt {attempt})",
        task_id=task_id,
        settlement_key=f"task:{task_id}:{attempt}:reserve",
    )


async def capture(
    session: Transaction, user_id: str, task_id: str, attempt: int, amount: int, task_no: str
) -> int:
    """The held credits are spent. The balance does not move again; the ledger records it."""
    return await _apply(
        session,
        user_id,
        0,
        "capture",
        f"Charged {amount} for task {task_no} (attempt {attempt})",
        task_id=task_id,
        settlement_key=f"task:{task_id}:{attempt}:settle",
        spent=amount,
    )


async def release(
    session: Transaction, user_id: str, task_id: str, attempt: int, amount: int, task_no: str, why: str
) -> int:
    """Give the held credits back (failed or canceled attempt)."""
    return await _apply(
        session,
        user_id,
        amount,
        "release",
        f"Refunded for task {task_no} (attempt {attempt}): {why}",
        task_id=task_id,
        settlement_key=f"task:{task_id}:{attempt}:settle",
    )


async def ledger(session: AsyncSession, user_id: str, *, limit: int, offset: int) -> Page:
    total = await session.scalar(
        select(func.count()).select_from(CreditTransaction).where(CreditTransaction.user_id == user_id)
    )
    rows = await session.scalars(
        select(CreditTransaction)
        .where(CreditTransaction.user_id == user_id)
        .order_by(CreditTransaction.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return Page(list(rows), total or 0)


@dataclass(frozen=True)
class Mismatch:
    user_id: str
    balance: int
    ledger_sum: int


async def find_mismatches(session: AsyncSession) -> list[Mismatch]:
    """Users whose balance differs from the sum of their ledger (should never happen)."""
    sums = (
        select(CreditTransaction.user_id, func.coalesce(func.sum(CreditTransaction.amount), 0).label("total"))
        .group_by(CreditTransaction.user_id)
        .subquery()
    )
    rows = await session.execute(
        select(UserCredits.user_id, UserCredits.credits, func.coalesce(sums.c.total, 0))
        .outerjoin(sums, sums.c.user_id == UserCredits.user_id)
        .where(UserCredits.credits != func.coalesce(sums.c.total, 0))
    )
    return [Mismatch(u, b, int(s)) for u, b, s in rows]
