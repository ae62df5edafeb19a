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


@pytest.mark.parametrize("name", [None, "T1_output_1.png", "my photo & more+1.png", "照片 #2?.jpg"])
def test_signed_urls_are_urlencodes_query_and_verify(tmp_path: Path, name: str | None) -> None:
    """The query is built by hand (figure 3 of the bench: urlencode cost ~8 µs a URL, four URLs a
    file): it must be exactly what urlencode gave, and parse back to what was signed."""
    from types import SimpleNamespace
    from urllib.parse import parse_qs, urlencode, urlsplit

    from darkroom.storage.thumbnails import thumbnail_url

    local = storage(tmp_path)
    key = "inputs/2026/12/08/1_a b.png"
    url = local.url(key, expires_in=600, download_name=name)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    expected = {"expires": query["expires"][0], "sig": query["sig"][0]}
    if name:
        expected["download"] = name
    assert parts.query == urlencode(expected)
    assert query.get("download", [None])[0] == name
    assert local.signer.verify(key, int(query["expires"][0]), query["sig"][0])

    ctx = SimpleNamespace(settings=SimpleNamespace(secret_key="t" * 40, file_url_ttl=600))
    thumb = urlsplit(thumbnail_url(ctx, key, 320))  # type: ignore[arg-type]  # what it reads of a context
    q = parse_qs(thumb.query)
    assert thumb.query == urlencode({"expires": q["expires"][0], "sig": q["sig"][0]})
