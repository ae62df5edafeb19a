"""Object keys: ours, unique, and never containing a client's raw file name.

Pattern (the seed's): ``{folder}/{yyyy}/{mm}/{timestamp_ms}_{random}_{cleanname}.{ext}``.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from datetime import UTC, datetime

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
KEY_PATTERN = re.compile(r"^[a-z]+(/[0-9]{4}/[0-9]{2})?/[A-Za-z0-9_-]+\.[a-z0-9]+$")


def clean_name(name: str | None, max_length: int = 40) -> str:
    stem = (name or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("_", stem).strip("_-")[:max_length]
    return stem or "image"


def new_key(folder: str, original_name: str | None, content_type: str) -> str:
    now = datetime.now(UTC)
    ext = EXTENSIONS.get(content_type, "bin")
    token = secrets.token_hex(4)
    return f"{folder}/{now:%Y/%m}/{int(time.time() * 1000)}_{token}_{clean_name(original_name)}.{ext}"


def is_valid_key(key: str) -> bool:
    return bool(KEY_PATTERN.match(key)) and ".." not in key
