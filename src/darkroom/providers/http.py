"""The HTTP client every external provider shares: timeouts, retries, Retry-After, error mapping.

* Each request has a timeout (``DARKROOM_PROVIDER_TIMEOUT_SECONDS``). A timed-out request that
  may have created something (a POST) is not repeated — it raises :class:`ProviderTimeout` — so
  a slow provider is never asked (and paid) twice; idempotent reads are retried.
* 429 and 5xx answers are retried ``DARKROOM_PROVIDER_RETRIES`` times with jittered exponential
  backoff, or after the ``Retry-After`` the provider asked for. A ``Retry-After`` longer than
  ``DARKROOM_PROVIDER_MAX_RETRY_AFTER_SECONDS`` is not waited for: the error goes up at once so
  the next provider of the fallback chain can serve the task.
* Connection failures before anything was sent (connect refused or timed out) are retried the
  same way.
* ``replay=False`` marks a create whose duplicate would cost money and that the provider offers
  no idempotency key for (a Replicate prediction). It is repeated only when the provider provably
  did not take it: a failed connect, or a 429. After a 5xx, a timeout or a connection lost once
  the request was on the wire, :class:`MaybeAccepted` is raised instead: the caller looks for
  what it may have created (reconciles) rather than asking again.
* ``refuse`` lets a provider name answers that are not worth retrying although their status
  would be (OpenAI's 429 ``insufficient_quota``): they go up at once.
* What is left is mapped onto the provider error tree by :func:`error_for_status`; 402 Payment
  Required (no credit left at the provider) is ``provider_unavailable``, so the chain fails over.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from darkroom.config import Settings
from darkroom.providers.base import (
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)

log = logging.getLogger(__name__)


class MaybeAccepted(ProviderUnavailable):
    """A create that must not be replayed failed after it was sent: it may exist at the provider."""


@dataclass(frozen=True)
class RetryPolicy:
    timeout: float = 120.0
    retries: int = 2
    backoff: float = 1.0
    max_retry_after: float = 60.0
    poll_interval: float = 1.0
    deadline: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            timeout=settings.provider_timeout_seconds,
            retries=settings.provider_retries,
            backoff=settings.provider_backoff_seconds,
            max_retry_after=settings.provider_max_retry_after_seconds,
            poll_interval=settings.provider_poll_seconds,
            deadline=settings.provider_deadline_seconds,
        )

    def delay(self, attempt: int) -> float:
        """Equal-jitter exponential backoff: half fixed, half random (attempt 0, 1, 2 …)."""
        ceiling = min(self.backoff * (2**attempt), 60.0)
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_text(response: httpx.Response, limit: int = 300) -> str:
    """The provider's own message when its body has one, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:limit]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:limit]
        for key in ("detail", "message", "error", "errors", "name"):
            if body.get(key):
                return str(body[key])[:limit]
    return str(body)[:limit]


def error_for_status(provider: str, response: httpx.Response) -> ProviderError:
    """An error answer the provider-specific code did not recognise → the error tree."""
    status = response.status_code
    text = error_text(response)
    if status in (400, 404, 413, 415, 422):
        return InvalidInput(f"{provider} refused the request ({status}): {text}")
    if status in (401, 403):
        return ProviderUnavailable(f"{provider} refused our credentials ({status}): {text}")
    if status == 402:
        return ProviderUnavailable(
            f"{provider} refused the request for lack of credit on our account (402); "
            f"the operator must top it up: {text}"
        )
    if status == 408:
        return ProviderTimeout(f"{provider} timed out ({status}): {text}")
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        hint = f" (retry after {retry_after:.0f} s)" if retry_after is not None else ""
        return RateLimited(f"{provider} is rate limiting us{hint}: {text}", retry_after=retry_after)
    if status >= 500:
        return ProviderUnavailable(f"{provider} is unavailable ({status}): {text}")
    return ProviderError(f"{provider} answered {status}: {text}")


def json_body(provider: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ProviderError(f"{provider} sent a malformed answer (not JSON).") from None
    if not isinstance(body, dict):
        raise ProviderError(f"{provider} sent a malformed answer (not a JSON object).")
    return body


class ProviderHttp:
    """An ``httpx.AsyncClient`` with the retry policy. One per provider, closed with it."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        policy: RetryPolicy,
        headers: Mapping[str, str] | None = None,
        refuse: Callable[[httpx.Response], ProviderError | None] | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.refuse = refuse
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=dict(headers or {}),
            timeout=httpx.Timeout(policy.timeout, connect=min(policy.timeout, 10.0)),
            follow_redirects=False,
        )

    async def send(
        self, method: str, url: str, *, idempotent: bool = False, replay: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send with retries; returns any answer that is not 429/5xx (the caller maps 4xx).

        ``idempotent``: a read, repeated after timeouts too. ``replay=False``: see the module doc.
        """
        policy = self.policy
        for attempt in range(policy.retries + 1):
            last = attempt == policy.retries
            try:
                response = await self.client.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
                if not last:
                    await asyncio.sleep(policy.delay(attempt))
                    continue
                raise ProviderUnavailable(f"{self.provider} cannot be reached: {exc!r}") from None
            except httpx.TimeoutException:
                if idempotent and not last:
                    await asyncio.sleep(policy.delay(attempt))
                    continue
                message = f"{self.provider} did not answer within {policy.timeout:g} s."
                if not replay:
                    raise MaybeAccepted(message) from None
                raise ProviderTimeout(message) from None
            except httpx.TransportError as exc:  # the request may have reached the provider
                if not replay:
                    raise MaybeAccepted(f"{self.provider} dropped the connection: {exc!r}") from None
                if not last:
                    await asyncio.sleep(policy.delay(attempt))
                    continue
                raise ProviderUnavailable(f"{self.provider} cannot be reached: {exc!r}") from None
            if response.status_code != 429 and response.status_code < 500:
                return response
            refused = self.refuse(response) if self.refuse is not None else None
            if refused is not None:
                raise refused
            error = error_for_status(self.provider, response)
            if response.status_code >= 500 and not replay and not idempotent:
                raise MaybeAccepted(error.message, retry_after=error.retry_after)
            wait = error.retry_after if response.status_code == 429 else None
            wait = parse_retry_after(response.headers.get("retry-after")) if wait is None else wait
            if last or (wait is not None and wait > policy.max_retry_after):
                raise error
            delay = wait if wait is not None else policy.delay(attempt)
            log.info("%s answered %s; retrying in %.2f s", self.provider, response.status_code, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self.client.aclose()


class ConcurrencyLimit:
    """At most ``limit`` runs of one provider at a time in this process."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(limit)

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._semaphore.release()
