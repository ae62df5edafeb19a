"""Many concurrent submissions against a balance that pays for only some of them."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from darkroom.models import CreditTransaction, UserCredits
from tests.doubles import ScriptedProvider
from tests.support import photo, register, submit, wait_for


async def test_concurrent_submissions_never_overdraw(app_client) -> None:  # type: ignore[no-untyped-def]
    provider = ScriptedProvider("scripted", ("color_enhancement",))
    async with app_client(providers=[provider], default_ai_provider="scripted", signup_credits=7) as client:
        headers = await register(client)
        image = photo(48, 48)
        responses = await asyncio.gather(
            *(submit(client, headers, "color_enhancement", [image]) for _ in range(25))
        )
        codes = sorted(r.status_code for r in responses)
        assert codes.count(201) == 7 and codes.count(402) == 18, codes
        for r in responses:
            if r.status_code == 201:
                await wait_for(client, headers, r.json()["data"]["id"])
        me = (await client.get("/api/me", headers=headers)).json()["data"]
        assert me["credits"] == 0

        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        async with ctx.db.transaction(write=False) as session:
            user_id = me["user"]["id"]
            balance = await session.scalar(select(UserCredits.credits).where(UserCredits.user_id == user_id))
            ledger = await session.scalar(
                select(func.sum(CreditTransaction.amount)).where(CreditTransaction.user_id == user_id)
            )
            captures = await session.scalar(
                select(func.count()).where(
                    CreditTransaction.user_id == user_id, CreditTransaction.transaction_type == "capture"
                )
            )
        assert balance == ledger == 0
        assert captures == 7
