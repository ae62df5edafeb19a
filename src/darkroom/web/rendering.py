"""Template rendering with the request's language, CSRF token and security headers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from darkroom.context import AppContext
from darkroom.models import User
from darkroom.web import i18n
from darkroom.web.session import CSRF_FIELD, csrf_token, ensure_csrf_cookie

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# No inline scripts or styles anywhere; images may come from blob: (local previews before upload).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def locale_of(request: Request, ctx: AppContext, user: User | None = None) -> str:
    return i18n.choose(request, ctx.settings.default_locale, user.preferred_locale if user else None)


def render(
    request: Request,
    ctx: AppContext,
    template: str,
    values: dict[str, Any] | None = None,
    *,
    user: User | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    locale = locale_of(request, ctx, user)

    def t(key: str, **kw: Any) -> str:
        return i18n.translate(locale, key, **kw)

    # Strings the scripts need, handed over as JSON in a data attribute (no inline script).
    js_strings = {k: v for k, v in i18n.UI[locale].items() if k.split(".")[0] in _JS_SECTIONS}

    def err(code: str | None, message: str | None) -> str:
        return i18n.error_message(locale, code or "", message or "")

    context = {
        "request": request,
        "t": t,
        "err": err,
        "ledger_text": lambda description: i18n.ledger_description(locale, description),
        "param_text": lambda name, value: i18n.parameter_text(locale, name, value),
        "locale": locale,
        "other_locale": "en" if locale == "zh-CN" else "zh-CN",
        "user": user,
        "csrf_token": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "js_strings": json.dumps(js_strings, ensure_ascii=False),
        "settings": ctx.settings,
        "path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }
    context.update(values or {})
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    secure(response)
    ensure_csrf_cookie(request, response, ctx.settings)
    return response


_JS_SECTIONS = {"upload", "studio", "tasks", "status", "type", "error", "task", "param", "value"}


def secure(response: Response) -> Response:
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
