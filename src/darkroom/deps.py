"""FastAPI dependencies: the app context, a request-owned transaction, the current user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from darkroom.auth import service as auth_service
from darkroom.auth.security import decode_token_cached
from darkroom.context import AppContext
from darkroom.db import DriverStatement
from darkroom.models import User
from darkroom.uow import owned
from darkroom.web import session as web_session

_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


async def get_context(request: Request) -> AppContext:
    """Async, as every dependency here: FastAPI runs a plain ``def`` dependency in its thread
    pool, a thread hop per request for an attribute read (bench figure 3)."""
    ctx: AppContext = request.app.state.ctx
    return ctx


Context = Annotated[AppContext, Depends(get_context)]


async def get_read_session(request: Request, ctx: Context) -> AsyncIterator[AsyncSession | None]:
    """For GET/HEAD/OPTIONS: one read session (one transaction) shared by the user lookup and the
    endpoint, instead of one each: a status poll costs one BEGIN/COMMIT less (bench figure 5).
    None for writes, whose user lookup stays in a short transaction of its own."""
    if request.method not in _READ_METHODS:
        yield None
        return
    async with ctx.db.session(write=False) as session, owned(session):
        yield session


SharedReadSession = Annotated[AsyncSession | None, Depends(get_read_session, scope="function")]


async def get_session(
    request: Request, ctx: Context, shared: SharedReadSession
) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit when the endpoint returns, before the response
    is sent; roll back on any error. After-commit hooks (job dispatch) run only after a commit.
    The transaction begins at the first statement, not before."""
    if shared is not None:  # a read request: the shared session commits or rolls back
        yield shared
        return
    write = request.method not in _READ_METHODS
    async with ctx.db.session(write=write) as session, owned(session):
        yield session


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="The accessToken from /api/auth/login or /register.")


async def get_current_user(
    request: Request,
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    shared: SharedReadSession,
) -> User:
    """The token's user. A write request reads it with one statement of its own on the driver,
    outside any transaction (``Database.fetch_single``), so that the request's write transaction
    (on SQLite, the database's write lock) starts only when the endpoint writes; a read request
    reads it in the request's one read transaction.
    Browsers send the token in the session cookie instead; then writes need the CSRF header."""
    if shared is None:
        return await write_user(request, ctx, credentials.credentials if credentials else None)
    token = web_session.request_token(request, credentials.credentials if credentials else None)
    claims = decode_token_cached(token, ctx.settings.secret_key)  # the user is still read below
    return await auth_service.get_active_user(shared, claims)


async def write_user(request: Request, ctx: AppContext, bearer: str | None) -> User:
    """The token's user for a write request: one driver statement, outside any transaction."""
    token = web_session.request_token(request, bearer)
    claims = decode_token_cached(token, ctx.settings.secret_key)
    rows = await ctx.db.fetch_single(_USER, {"user_id": claims.user_id})
    user = auth_service.check_token_user(User(**rows[0]._asdict()) if rows else None, claims)
    make_transient_to_detached(user)  # as if loaded by a session that has closed since
    return user


_USER = DriverStatement(select(User.__table__).where(User.__table__.c.id == bindparam("user_id")))


CurrentUser = Annotated[User, Depends(get_current_user)]
