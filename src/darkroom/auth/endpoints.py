from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from darkroom.auth import service
from darkroom.auth.schemas import LoginRequest, MeRead, RegisterRequest, TokenRead, UserRead
from darkroom.auth.security import issue_token
from darkroom.credits import service as credits
from darkroom.deps import Context, CurrentUser, Session
from darkroom.errors import Forbidden
from darkroom.schemas import Envelope, ok

router = APIRouter(prefix="/api", tags=["auth"])


def _token(ctx: Context, user: Any) -> dict[str, Any]:
    issued = issue_token(user.id, ctx.settings.secret_key, ctx.settings.jwt_expires_in, user.token_version)
    return TokenRead(
        user=UserRead.model_validate(user), access_token=issued.token, expires_in=issued.expires_in
    ).model_dump(by_alias=True, mode="json")


@router.post("/auth/register", status_code=201, response_model=Envelope[TokenRead])
async def register(body: RegisterRequest, session: Session, ctx: Context) -> dict[str, Any]:
    """Create an account; it starts with the sign-up grant of credits."""
    if not ctx.settings.allow_signup:
        raise Forbidden("Sign-up is closed on this server.", code="signup_closed")
    user = await service.create_user(
        session,
        email=body.email,
        password=body.password,
        username=body.username,
        credits_grant=ctx.settings.signup_credits,
    )
    return ok(_token(ctx, user), "Account created")


@router.post("/auth/login", response_model=Envelope[TokenRead])
async def login(body: LoginRequest, session: Session, ctx: Context) -> dict[str, Any]:
    user = await service.authenticate(session, body.email, body.password)
    return ok(_token(ctx, user))


@router.post("/auth/logout", response_model=Envelope[None])
async def logout(user: CurrentUser, session: Session) -> dict[str, Any]:
    """Log out everywhere: this token and every other access token of the account stop working
    (browser sessions included). Log in again for a new one."""
    await service.revoke_tokens(session, user.id)
    return ok(None, "Logged out")


@router.get("/me", response_model=Envelope[MeRead])
async def me(user: CurrentUser, session: Session) -> dict[str, Any]:
    balance = await credits.balance_of(session, user.id)
    return ok(
        MeRead(user=UserRead.model_validate(user), credits=balance).model_dump(by_alias=True, mode="json")
    )
