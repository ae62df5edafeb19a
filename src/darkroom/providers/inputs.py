"""A task's stored input file as the :class:`InputImage` a provider is given."""

from __future__ import annotations

from darkroom.providers.base import InputImage
from darkroom.storage.base import Storage


async def load_input(storage: Storage, key: str, content_type: str, name: str = "") -> InputImage:
    """The object ``key``'s bytes, and its file when the storage is a local disk.

    Raises ``ObjectNotFound`` when the object is gone.
    """
    return InputImage(
        data=await storage.get(key), content_type=content_type, name=name, path=storage.local_path(key)
    )
