"""A task's stored input as a provider sees it."""

from __future__ import annotations

from pathlib import Path

import pytest

from darkroom.providers.inputs import load_input
from darkroom.storage.base import ObjectNotFound
from darkroom.storage.keys import new_key
from darkroom.storage.local import LocalStorage
from darkroom.storage.signing import UrlSigner
from tests.fixtures.photos import photo_bytes


async def test_a_local_input_comes_with_its_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, UrlSigner("s" * 40))
    key = new_key("inputs", "photo.jpg", "image/jpeg")
    data = photo_bytes(64, 48)
    await storage.put(key, data, "image/jpeg")

    image = await load_input(storage, key, "image/jpeg", "photo.jpg")

    assert (image.data, image.content_type, image.name) == (data, "image/jpeg", "photo.jpg")
    assert image.path == storage.path_of(key) and image.path.read_bytes() == data


async def test_a_missing_input_is_object_not_found(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, UrlSigner("s" * 40))
    with pytest.raises(ObjectNotFound):
        await load_input(storage, new_key("inputs", "gone.jpg", "image/jpeg"), "image/jpeg")
