from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from darkroom.providers.local import LocalProvider


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    """One real provider (process pool, real models) per test module."""
    local = LocalProvider(max_workers=1)
    yield local
    asyncio.run(local.aclose())
