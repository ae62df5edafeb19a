"""Verify Standard Webhooks signatures (the scheme Replicate uses).

Spec: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
and Replicate's "Verifying webhooks" guide (https://replicate.com/docs/topics/webhooks/verify-webhook):

* headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
  (space-separated ``v1,<base64>`` entries — several while a secret is being rotated);
* signed content ``f"{id}.{timestamp}.{raw body}"``, HMAC-SHA256 with the secret, which is the
  base64 text after the ``whsec_`` prefix;
* timestamps further than ``tolerance`` seconds from now are refused (replays).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping


class WebhookRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def secret_bytes(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret must look like whsec_<base64>") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: int = 300, now: float | None = None
) -> None:
    """Raise :class:`WebhookRejected` unless the request is signed with ``secret`` and fresh."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookRejected("invalid_webhook_signature", "The webhook headers are missing.")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookRejected("invalid_webhook_signature", "The webhook timestamp is not a number.") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookRejected("stale_webhook", "The webhook timestamp is too old (or in the future).")
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise WebhookRejected("invalid_webhook_signature", "The webhook signature does not match.")
