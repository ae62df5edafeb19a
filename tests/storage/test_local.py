"""Local storage: where keys land on disk, and the folders it creates."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from darkroom.storage.base import ObjectNotFound, StorageError
from darkroom.storage.keys import new_key
from darkroom.storage.local import LocalStorage
from darkroom.storage.signing import UrlSigner


def storage(root: Path) -> LocalStorage:
    return LocalStorage(root, UrlSigner("s" * 40))


async def test_a_folder_behind_a_symlink_is_used_not_refused(tmp_path: Path) -> None:
    """An operator may put ``outputs`` on another disk with a symlink (failed before: resolving
    the link put the file outside the root, so every key under it was refused)."""
    root, elsewhere = tmp_path / "files", tmp_path / "big-disk"
    root.mkdir()
    elsewhere.mkdir()
    (root / "outputs").symlink_to(elsewhere, target_is_directory=True)
    store = storage(root)
    key = new_key("outputs", "result.png", "image/png")

    await store.put(key, b"png bytes", "image/png")

    assert await store.get(key) == b"png bytes"
    assert (elsewhere / key.split("/", 1)[1]).read_bytes() == b"png bytes"
    assert await store.list_keys(key.rsplit("/", 1)[0] + "/") == [key]


@pytest.mark.parametrize("key", ["../x.png", "/etc/passwd", "outputs/../../x.png", "outputs/a/b/x.png", ""])
async def test_keys_that_are_not_ours_name_no_file(tmp_path: Path, key: str) -> None:
    store = storage(tmp_path)
    with pytest.raises(ObjectNotFound):
        store.path_of(key)
    with pytest.raises(ObjectNotFound):
        await store.get(key)
    assert await store.list_keys("../") == []


async def test_folders_are_created_for_writes_and_moves(tmp_path: Path) -> None:
    store = storage(tmp_path / "files")
    first, second = new_key("inputs", "a.jpg", "image/jpeg"), new_key("outputs", "b.png", "image/png")
    await store.put(first, b"a", "image/jpeg")  # the root and the month folder do not exist yet
    staged = tmp_path / "staged"
    staged.write_bytes(b"b")
    await store.put_file(second, staged, "image/png")
    assert (await store.get(first), await store.get(second)) == (b"a", b"b")
    assert not staged.exists()

    missing = tmp_path / "gone"
    with pytest.raises(StorageError, match="cannot store"):
        await store.put_file(new_key("outputs", "c.png", "image/png"), missing, "image/png")


async def test_a_staged_upload_moves_into_a_folder_on_another_file_system(tmp_path: Path) -> None:
    """Staging lives under the root, so storing an upload is a rename; into a symlinked folder on
    another file system a rename fails (EXDEV) and the file is copied instead (failed before:
    'cannot store')."""
    other_fs = Path(tempfile.mkdtemp(dir="/dev/shm"))  # tmpfs, not the disk tmp_path is on
    try:
        assert other_fs.stat().st_dev != tmp_path.stat().st_dev
        store = storage(tmp_path / "files")
        (tmp_path / "files").mkdir()
        (tmp_path / "files" / "inputs").symlink_to(other_fs, target_is_directory=True)
        staged = tmp_path / "files" / "staging-upload"
        staged.write_bytes(b"jpeg bytes")
        key = new_key("inputs", "photo.jpg", "image/jpeg")

        await store.put_file(key, staged, "image/jpeg")

        assert await store.get(key) == b"jpeg bytes"
        assert not staged.exists()
        assert [p.name for p in other_fs.rglob("*") if p.is_file()] == [key.rsplit("/", 1)[1]]
    finally:
        shutil.rmtree(other_fs)
