"""Accounts: register, log in, look up. Never commits; the caller owns the transaction."""

from __future__ import annotations

from typing import Protocol, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from darkroom.auth.security import TokenClaims, hash_password, needs_rehash, verify_password
from darkroom.credits import service as credits
from darkroom.errors import Conflict, Unauthorized
from darkroom.models import User, UserCredits
from darkroom.models.base import new_id


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == normalise_email(email)))
    return result.scalar_one_or_none()


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    username: str | None = None,
    credits_grant: int = 0,
    is_admin: bool = False,
    grant_description: str = "Sign-up grant",
) -> User:
    email = normalise_email(email)
    if await get_by_email(session, email) is not None:
        raise Conflict("An account with this e-mail already exists.", code="email_taken")
    if username is not None:
        taken = await session.scalar(
            select(func.count()).where(func.lower(User.username) == username.lower())
        )
        if taken:
            raise Conflict("This username is taken.", code="username_taken")
    user = User(
        id=new_id(), email=email, username=username, password_hash=hash_password(password), is_admin=is_admin
    )
    session.add(user)
    session.add(UserCredits(user_id=user.id, credits=0))
    try:
        await session.flush()
    except IntegrityError:  # a concurrent registration won the race
        raise Conflict("An account with this e-mail already exists.", code="email_taken") from None
    if credits_grant:
        await credits.grant(session, user.id, credits_grant, grant_description)
    return user


async def authenticate(session: AsyncSession, email: str, password: str) -> User:
    """Same answer and about the same time whether the e-mail is unknown or the password wrong."""
    user = await get_by_email(session, email)
    ok = verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise Unauthorized("E-mail or password is incorrect.", code="invalid_credentials")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


async def get_active_user(session: AsyncSession, claims: TokenClaims) -> User:
    user = await session.get(User, claims.user_id)
    return check_token_user(user, claims)


class TokenUser(Protocol):
    @property
    def is_active(self) -> bool: ...
    @property
    def token_version(self) -> int: ...


U = TypeVar("U", bound=TokenUser)


def check_token_user(user: U | None, claims: TokenClaims) -> U:
    """The token's user must exist and be active, and the token not revoked since it was issued.
    ``user`` is a ``User`` or a row with those two columns."""
    if user is None or not user.is_active:
        raise Unauthorized("The access token is not valid.", code="invalid_token")
    if user.token_version != claims.version:
        raise Unauthorized("You have logged out; log in again.", code="token_revoked")
    return user


async def revoke_tokens(session: AsyncSession, user_id: str) -> None:
    """Log out everywhere: every access token issued so far stops working."""
    await session.execute(update(User).where(User.id == user_id).values(token_version=User.token_version + 1))
