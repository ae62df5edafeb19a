"""Password hashing (argon2id) and access tokens (JWT, HS256 only)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from darkroom.errors import Unauthorized

ALGORITHM = "HS256"  # pinned: tokens naming any other algorithm are refused
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the e-mail is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash("darkroom-timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    version: int  # the user's token_version when it was issued; stale after a logout


def issue_token(user_id: str, secret: str, expires_in: int, version: int = 0) -> IssuedToken:
    now = datetime.now(UTC)
    payload = {
        "sub": user_id,
        "iat": now,
        "exp": now + timedelta(seconds=expires_in),
        "typ": "access",
        "ver": version,
    }
    return IssuedToken(jwt.encode(payload, secret, algorithm=ALGORITHM), expires_in)


def decode_token(token: str, secret: str) -> TokenClaims:
    """The claims of a valid token, or Unauthorized with a precise code."""
    return _decode(token, secret)[0]


def _decode(token: str, secret: str) -> tuple[TokenClaims, float]:
    """The claims and the expiry time (epoch seconds)."""
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "iat"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Your session has expired; log in again.", code="token_expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("The access token is not valid.", code="invalid_token") from None
    sub = payload.get("sub")
    version = payload.get("ver", 0)  # tokens issued before versions existed count as version 0
    if not isinstance(sub, str) or payload.get("typ") != "access" or type(version) is not int:
        raise Unauthorized("The access token is not valid.", code="invalid_token")
    return TokenClaims(sub, version), float(payload["exp"])


_CACHE_SIZE = 1024
# (secret, token) → (claims, exp): tokens that passed ``decode_token``; a poller re-sends the same
# string many times a second; verifying its HMAC and parsing it again each time gains nothing.
_decoded: OrderedDict[tuple[str, str], tuple[TokenClaims, float]] = OrderedDict()


def decode_token_cached(token: str, secret: str) -> TokenClaims:
    """``decode_token`` for a token seen recently: the same claims without verifying the signature
    again. Expiry is checked on every call; only valid tokens are remembered (at most 1,024, the
    least recently used go first). The user's ``token_version`` is still checked by the caller."""
    key = (secret, token)
    hit = _decoded.get(key)
    if hit is not None:
        claims, exp = hit
        if time.time() >= exp:
            _decoded.pop(key, None)
            raise Unauthorized("Your session has expired; log in again.", code="token_expired")
        _decoded.move_to_end(key)
        return claims
    claims, exp = _decode(token, secret)
    _decoded[key] = (claims, exp)
    while len(_decoded) > _CACHE_SIZE:
        _decoded.popitem(last=False)
    return claims
