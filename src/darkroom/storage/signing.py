"""Signed, expiring file URLs for storage that we serve ourselves."""

from __future__ import annotations

import hashlib
import hmac
import time


class UrlSigner:
    def __init__(self, secret: str) -> None:
        # A key of its own, derived from the app secret, so a URL signature is never a token.
        self._key = hashlib.sha256(b"darkroom-file-url\x00" + secret.encode()).digest()

    def signature(self, key: str, expires: int) -> str:
        msg = f"{key}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:40]

    def sign(self, key: str, expires_in: int) -> tuple[int, str]:
        expires = int(time.time()) + expires_in
        # Round up to the minute so that repeated reads give the same URL (browser caching).
        expires += -expires % 60
        return expires, self.signature(key, expires)

    def verify(self, key: str, expires: int, signature: str) -> bool:
        if expires < time.time():
            return False
        return hmac.compare_digest(self.signature(key, expires), signature)
