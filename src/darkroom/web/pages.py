"""The browser pages. Thin: they call the same services as the JSON API and render templates.

Reads use short transactions; the forms that write (sign up, log in, language) own theirs.
Everything the pages do with tasks afterwards goes through the JSON API (cookie + CSRF header).
"""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from darkroom.auth import service as auth_service
from darkroom.auth.schemas import RegisterRequest
from darkroom.auth.security import decode_token, issue_token
from darkroom.credits import service as credits_service
from darkroom.deps import Context
from darkroom.errors import DarkroomError, Forbidden, Unauthorized
from darkroom.events.stream import latest_for_user
from darkroom.models import User
from darkroom.tasks import service as task_service
from darkroom.tasks.presenter import present
from darkroom.web import i18n
from darkroom.web.rendering import locale_of, render, secure
from darkroom.web.session import check_csrf, clear_session, cookie_token, set_session

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 20
LANG_MAX_AGE = 365 * 86400

CsrfField = Annotated[str | None, Form(alias="csrf_token")]


async def page_user(request: Request, ctx: Context) -> User | None:
    token = cookie_token(request)
    if token is None:
        return None
    try:
        claims = decode_token(token, ctx.settings.secret_key)
        async with ctx.db.transaction(write=False) as session:
            return await auth_service.get_active_user(session, claims)
    except Unauthorized:
        return None


def _to_login(request: Request) -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    if cookie_token(request):
        clear_session(response)
    return response


def _safe_next(value: str | None) -> str:
    """Only our own paths: never another site (open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json")


# --- studio --------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def studio(request: Request, ctx: Context, offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    user = await page_user(request, ctx)
    if user is None:
        return _to_login(request)
    base = str(request.base_url)
    async with ctx.db.transaction(write=False) as session:
        tasks, total = await task_service.list_tasks(
            session, user, limit=PAGE_SIZE, offset=offset, status=None
        )
        files = await task_service.files_of(session, tasks)
        balance = await credits_service.balance_of(session, user.id)
    seq = await latest_for_user(ctx, user.id)
    return render(
        request,
        ctx,
        "studio.html",
        {
            "tasks": [_dump(present(ctx, base, t, files[t.id])) for t in tasks],
            "total": total,
            "offset": offset,
            "page_size": PAGE_SIZE,
            "balance": balance,
            "seq": seq,
            "max_files": ctx.settings.max_files,
            "max_file_mb": ctx.settings.max_file_mb,
        },
        user=user,
    )


@router.get("/ui/tasks/{task_id}/card", response_class=HTMLResponse)
async def task_card(task_id: str, request: Request, ctx: Context, single: bool = False) -> Response:
    """One task card, for the scripts to swap in when a task changes status."""
    user = await page_user(request, ctx)
    if user is None:
        return secure(Response(status_code=401))
    async with ctx.db.transaction(write=False) as session:
        task = await task_service.get_owned(session, user, task_id)
        files = await task_service.files_of(session, [task])
    data = _dump(present(ctx, str(request.base_url), task, files[task.id]))
    return render(request, ctx, "_task_card.html", {"task": data, "single": single}, user=user)


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(task_id: str, request: Request, ctx: Context) -> Response:
    user = await page_user(request, ctx)
    if user is None:
        return _to_login(request)
    try:
        async with ctx.db.transaction(write=False) as session:
            task = await task_service.get_owned(session, user, task_id)
            files = await task_service.files_of(session, [task])
            attempts = await task_service.attempts_of(session, task)
    except DarkroomError as exc:
        locale = locale_of(request, ctx, user)
        return render(
            request,
            ctx,
            "error.html",
            {"message": i18n.error_message(locale, exc.code, exc.message), "code": exc.code},
            user=user,
            status_code=exc.status_code,
        )
    data = _dump(present(ctx, str(request.base_url), task, files[task.id], attempts))
    return render(request, ctx, "task.html", {"task": data}, user=user)


@router.get("/credits", response_class=HTMLResponse)
async def credits_page(
    request: Request, ctx: Context, page: Annotated[int, Query(ge=1, le=100_000)] = 1
) -> Response:
    user = await page_user(request, ctx)
    if user is None:
        return _to_login(request)
    async with ctx.db.transaction(write=False) as session:
        balance = await credits_service.balance_of(session, user.id)
        offset = (page - 1) * PAGE_SIZE
        ledger = await credits_service.ledger(session, user.id, limit=PAGE_SIZE, offset=offset)
    pages = max(1, math.ceil(ledger.total / PAGE_SIZE))
    return render(
        request,
        ctx,
        "credits.html",
        {"balance": balance, "entries": ledger.items, "page": page, "pages": pages, "total": ledger.total},
        user=user,
    )


# --- accounts --------------------------------------------------------------------------------


def _signed_in(request: Request, ctx: Context, user: User) -> Response:
    issued = issue_token(user.id, ctx.settings.secret_key, ctx.settings.jwt_expires_in, user.token_version)
    response = RedirectResponse("/", status_code=303)
    set_session(request, response, ctx.settings, issued.token, issued.expires_in)
    return secure(response)


def _form_error(request: Request, ctx: Context, template: str, exc: DarkroomError, email: str) -> Response:
    locale = locale_of(request, ctx)
    return render(
        request,
        ctx,
        template,
        {"error": i18n.error_message(locale, exc.code, exc.message), "error_code": exc.code, "email": email},
        status_code=exc.status_code,
    )


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, ctx: Context) -> Response:
    if await page_user(request, ctx) is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, ctx, "login.html", {"email": ""})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    ctx: Context,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf: CsrfField = None,
) -> Response:
    try:
        check_csrf(request, csrf)
        async with ctx.db.transaction() as session:
            user = await auth_service.authenticate(session, email, password)
    except DarkroomError as exc:
        return _form_error(request, ctx, "login.html", exc, email)
    return _signed_in(request, ctx, user)


@router.get("/signup", response_class=HTMLResponse)
async def signup_form(request: Request, ctx: Context) -> Response:
    if await page_user(request, ctx) is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, ctx, "signup.html", {"email": ""})


@router.post("/signup", response_class=HTMLResponse)
async def signup(
    request: Request,
    ctx: Context,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf: CsrfField = None,
) -> Response:
    locale = locale_of(request, ctx)
    try:
        check_csrf(request, csrf)
        if not ctx.settings.allow_signup:
            raise Forbidden("Sign-up is closed on this server.", code="signup_closed")
        try:
            body = RegisterRequest(email=email, password=password)
        except ValidationError as exc:
            field = str(exc.errors()[0]["loc"][0])
            message = (
                i18n.translate(locale, "auth.password_hint")
                if field == "password"
                else f"{i18n.translate(locale, 'auth.email')}: {exc.errors()[0]['msg']}"
            )
            return render(
                request,
                ctx,
                "signup.html",
                {"error": message, "error_code": "validation_error", "email": email},
                status_code=422,
            )
        async with ctx.db.transaction() as session:
            user = await auth_service.create_user(
                session,
                email=body.email,
                password=body.password,
                credits_grant=ctx.settings.signup_credits,
            )
            user.preferred_locale = locale
    except DarkroomError as exc:
        return _form_error(request, ctx, "signup.html", exc, email)
    return _signed_in(request, ctx, user)


@router.post("/logout")
async def logout(request: Request, ctx: Context, csrf: CsrfField = None) -> Response:
    check_csrf(request, csrf)
    user = await page_user(request, ctx)
    if user is not None:  # the cookie's token, and every other token of the account, stop working
        async with ctx.db.transaction() as session:
            await auth_service.revoke_tokens(session, user.id)
    response = RedirectResponse("/login", status_code=303)
    clear_session(response)
    return secure(response)


@router.post("/locale")
async def switch_locale(
    request: Request,
    ctx: Context,
    locale: Annotated[str, Form(max_length=16)],
    next_path: Annotated[str | None, Form(alias="next", max_length=2000)] = None,
    csrf: CsrfField = None,
) -> Response:
    """Switch the language: remembered in a cookie and, when signed in, on the account."""
    check_csrf(request, csrf)
    chosen = i18n.normalise(locale) or ctx.settings.default_locale
    user = await page_user(request, ctx)
    if user is not None:
        async with ctx.db.transaction() as session:
            stored = await session.get(User, user.id)
            if stored is not None:
                stored.preferred_locale = chosen
    response = RedirectResponse(_safe_next(next_path), status_code=303)
    response.set_cookie(i18n.LANG_COOKIE, chosen, max_age=LANG_MAX_AGE, samesite="lax", path="/")
    return secure(response)
