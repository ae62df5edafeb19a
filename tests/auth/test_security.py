"""The cache of decoded access tokens (auth/security.py)."""

from __future__ import annotations

import pytest

from darkroom.auth import security
from darkroom.auth.security import TokenClaims, decode_token_cached, issue_token
from darkroom.errors import Unauthorized

SECRET = "a test secret that is long enough for HS256"


def test_remembers_valid_tokens_only_and_at_most_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "_CACHE_SIZE", 3)
    monkeypatch.setattr(security, "_decoded", type(security._decoded)())
    tokens = [issue_token(f"user-{i}", SECRET, 600, version=i).token for i in range(5)]
    for i, token in enumerate(tokens):
        assert decode_token_cached(token, SECRET) == TokenClaims(f"user-{i}", i)
    assert [key[1] for key in security._decoded] == tokens[2:]
    with pytest.raises(Unauthorized) as bad:
        decode_token_cached("not-a-token", SECRET)
    assert bad.value.code == "invalid_token" and len(security._decoded) == 3
    with pytest.raises(Unauthorized):  # the same string under another secret is decoded again
        decode_token_cached(tokens[4], SECRET + "!")


def test_an_expired_token_is_refused_even_when_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    token = issue_token("user-x", SECRET, 600).token
    assert decode_token_cached(token, SECRET).user_id == "user-x"
    now = security.time.time()
    monkeypatch.setattr(security.time, "time", lambda: now + 601)
    with pytest.raises(Unauthorized) as expired:
        decode_token_cached(token, SECRET)
    assert expired.value.code == "token_expired"
