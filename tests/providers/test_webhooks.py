"""Standard Webhooks signature checks (Replicate's scheme)."""

from __future__ import annotations

import base64

import pytest

from darkroom.providers.webhooks import WebhookRejected, sign, verify

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()
BODY = b'{"id":"p1","status":"succeeded"}'


def _headers(signature: str, stamp: int = 1_000_000, msg_id: str = "msg_1") -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def test_valid_signature_among_several_passes() -> None:
    good = sign(SECRET, "msg_1", 1_000_000, BODY)
    verify(SECRET, _headers(good), BODY, now=1_000_010)
    verify(SECRET, _headers(f"{sign(OTHER, 'msg_1', 1_000_000, BODY)} {good}"), BODY, now=1_000_000)


@pytest.mark.parametrize(
    ("headers", "body", "now", "code"),
    [
        (_headers(sign(OTHER, "msg_1", 1_000_000, BODY)), BODY, 1_000_000, "invalid_webhook_signature"),
        (
            _headers(sign(SECRET, "msg_1", 1_000_000, BODY)),
            BODY + b" ",
            1_000_000,
            "invalid_webhook_signature",
        ),
        (_headers(sign(SECRET, "msg_2", 1_000_000, BODY)), BODY, 1_000_000, "invalid_webhook_signature"),
        (_headers(sign(SECRET, "msg_1", 1_000_000, BODY)), BODY, 1_000_301, "stale_webhook"),
        (_headers(sign(SECRET, "msg_1", 1_000_000, BODY)), BODY, 999_600, "stale_webhook"),
        ({"webhook-id": "msg_1"}, BODY, 1_000_000, "invalid_webhook_signature"),
        (
            _headers("v2," + sign(SECRET, "msg_1", 1_000_000, BODY)[3:]),
            BODY,
            1_000_000,
            "invalid_webhook_signature",
        ),
    ],
)
def test_rejections(headers: dict[str, str], body: bytes, now: float, code: str) -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify(SECRET, headers, body, now=now)
    assert caught.value.code == code


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks spec / svix test suite: secret, id, timestamp, payload → signature.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    payload = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload) == expected
