"""The shared provider HTTP helpers: Retry-After parsing, backoff bounds, error mapping."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from darkroom.providers.http import RetryPolicy, error_for_status, parse_retry_after


def test_retry_after_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < (parse_retry_after(in_a_minute) or 0) <= 60
    assert parse_retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_is_jittered_within_exponential_bounds() -> None:
    policy = RetryPolicy(backoff=1.0)
    for attempt in range(4):
        ceiling = 2**attempt
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1
    assert policy.delay(20) <= 60


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_input"),
        (404, "invalid_input"),
        (401, "provider_unavailable"),
        (402, "provider_unavailable"),
        (403, "provider_unavailable"),
        (408, "timeout"),
        (429, "rate_limited"),
        (500, "provider_unavailable"),
        (503, "provider_unavailable"),
        (409, "provider_error"),
    ],
)
def test_status_codes_map_onto_the_error_tree(status: int, code: str) -> None:
    response = httpx.Response(status, json={"error": {"message": "nope"}}, headers={"retry-after": "7"})
    error = error_for_status("acme", response)
    assert error.code == code and "nope" in error.message
    if status == 429:
        assert error.retry_after == 7 and "retry after 7 s" in error.message
