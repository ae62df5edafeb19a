"""Browser sessions and CSRF protection.

The session cookie holds the same signed access token (JWT) the API hands out, HttpOnly and
SameSite=Lax. Every state-changing request authenticated by that cookie must carry the CSRF token
(double submit: a random value in its own HttpOnly cookie, repeated by the page in a form field
or the ``X-CSRF-Token`` header; a cross-site page can neither read nor set it). Requests with an
``Authorization: Bearer`` header never use the cookie and need no CSRF token.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from darkroom.config import Settings
from darkroom.errors import Forbidden, Unauthorized

SESSION_COOKIE = "darkroom_session"
CSRF_COOKIE = "darkroom_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def cookie_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def request_token(request: Request, bearer: str | None) -> str:
    """The access token of an API call: the bearer token, else the session cookie, which needs
    the CSRF header on writes."""
    if bearer:
        return bearer
    cookie = cookie_token(request)
    if cookie is None:
        raise Unauthorized("Log in first: send 'Authorization: Bearer <accessToken>'.", code="unauthorized")
    check_csrf_header(request)
    return cookie


def _secure(request: Request, settings: Settings) -> bool:
    if settings.secure_cookies is not None:
        return settings.secure_cookies
    return request.url.scheme == "https"


def csrf_token(request: Request) -> str:
    """The token pages embed: the cookie's value, or a fresh one that ``ensure_csrf_cookie`` sets."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) < 32:
        token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


def ensure_csrf_cookie(request: Request, response: Response, settings: Settings) -> None:
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(
            CSRF_COOKIE, new, httponly=True, samesite="lax", secure=_secure(request, settings), path="/"
        )


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise Forbidden(
            "The form has expired or did not come from this site; reload the page and try again.",
            code="csrf_failed",
        )


def check_csrf_header(request: Request) -> None:
    """For API calls authenticated by the session cookie."""
    if request.method not in SAFE_METHODS:
        check_csrf(request, request.headers.get(CSRF_HEADER))


def set_session(request: Request, response: Response, settings: Settings, token: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=_secure(request, settings),
        path="/",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
