"""The shared provider HTTP helpers: Retry-After parsing, backoff bounds, error mapping."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time

import httpx
import pytest

from darkroom.providers.base import ProviderUnavailable
from darkroom.providers.http import (
    MaybeAccepted,
    ProviderHttp,
    RetryPolicy,
    error_for_status,
    parse_retry_after,
)


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


async def test_a_create_is_not_replayed_once_it_may_have_been_received() -> None:
    """A loopback server that reads each request and hangs up without answering."""
    hits = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hits
        hits += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = ProviderHttp("acme", f"http://127.0.0.1:{port}", RetryPolicy(backoff=0.01, retries=2))
    try:
        with pytest.raises(MaybeAccepted):
            await http.send("POST", "/predictions", json={"input": {}}, replay=False)
        assert hits == 1
        # a create the caller allows to be replayed (a synchronous image request) is retried
        with pytest.raises(ProviderUnavailable) as caught:
            await http.send("POST", "/images", json={})
        assert not isinstance(caught.value, MaybeAccepted) and hits == 4
    finally:
        await http.aclose()
        server.close()
        await server.wait_closed()


async def test_a_refused_connection_is_retried_even_for_a_create() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connect is refused, nothing was sent
    http = ProviderHttp("acme", f"http://127.0.0.1:{port}", RetryPolicy(backoff=0.01, retries=2))
    try:
        with pytest.raises(ProviderUnavailable, match="cannot be reached") as caught:
            await http.send("POST", "/predictions", json={}, replay=False)
        assert not isinstance(caught.value, MaybeAccepted)
    finally:
        await http.aclose()
