"""S3Storage against a real S3-compatible server (SeaweedFS): round trips, presigned GET and PUT
(content type and length bound into the signature, expiry), CDN URLs, R2 configuration."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
import pytest

from darkroom.app import build_storage
from darkroom.storage.base import ObjectNotFound, StorageError
from darkroom.storage.keys import new_key
from darkroom.storage.s3 import S3Storage
from tests.conftest import make_settings
from tests.seaweed import SeaweedFS
from tests.support import photo


@pytest.fixture
def storage(seaweedfs: SeaweedFS, tmp_path: Path) -> S3Storage:
    built = build_storage(make_settings(tmp_path, **seaweedfs.settings(seaweedfs.new_bucket())))
    assert isinstance(built, S3Storage)
    return built


async def test_round_trip_stat_and_delete(storage: S3Storage) -> None:
    key = new_key("inputs", "photo.jpg", "image/jpeg")
    data = photo(64, 48)
    await storage.check()
    assert await storage.stat(key) is None and not await storage.exists(key)
    await storage.put(key, data, "image/jpeg")
    assert await storage.get(key) == data
    assert storage.local_path(key) is None  # no file on this machine: providers get the bytes
    info = await storage.stat(key)
    assert info is not None and info.size == len(data) and info.content_type == "image/jpeg"
    await storage.delete(key)
    await storage.delete(key)  # idempotent
    with pytest.raises(ObjectNotFound):
        await storage.get(key)


async def test_private_bucket_presigned_get(storage: S3Storage, seaweedfs: SeaweedFS) -> None:
    key = new_key("outputs", "result.png", "image/png")
    await storage.put(key, b"\x89PNG\r\n\x1a\nfake", "image/png")
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{seaweedfs.endpoint}/{storage.bucket}/{key}")).status_code == 403
        r = await http.get(storage.url(key, expires_in=60))
        assert r.status_code == 200 and r.content == b"\x89PNG\r\n\x1a\nfake"
        r = await http.get(storage.url(key, expires_in=60, download_name="result.png"))
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        url = storage.url(key, expires_in=60)
        assert (await http.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))).status_code == 403


async def test_presigned_put_binds_type_and_length_and_expires(storage: S3Storage) -> None:
    key = new_key("uploads", "photo.jpg", "image/jpeg")
    data = photo(64, 48)
    put = storage.presign_put(key, content_type="image/jpeg", size=len(data), expires_in=60)
    async with httpx.AsyncClient() as http:
        wrong_type = await http.put(put.url, content=data, headers={"Content-Type": "text/html"})
        assert wrong_type.status_code == 403
        longer = await http.put(put.url, content=data + b"x", headers=put.headers)
        assert longer.status_code == 403
        assert await storage.stat(key) is None
        r = await http.put(put.url, content=data, headers=put.headers)
        assert r.status_code == 200, r.text
        assert await storage.get(key) == data

        late = storage.presign_put(key, content_type="image/jpeg", size=len(data), expires_in=1)
        time.sleep(2.2)
        assert (await http.put(late.url, content=data, headers=late.headers)).status_code == 403


def test_cdn_url_and_r2_settings(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.new_bucket()
    s3 = build_storage(
        make_settings(tmp_path, **seaweedfs.settings(bucket), cdn_url="https://img.example.com/")
    )
    assert (
        s3.url("outputs/2026/11/a_b_c.png", expires_in=60)
        == "https://img.example.com/outputs/2026/11/a_b_c.png"
    )
    r2 = build_storage(
        make_settings(
            tmp_path,
            storage_provider="r2",
            r2_bucket_name=bucket,
            r2_access_key_id=seaweedfs.access_key,
            r2_secret_access_key=seaweedfs.secret_key,
            r2_endpoint=seaweedfs.endpoint,
        )
    )
    assert isinstance(r2, S3Storage) and r2.name == "r2"
    assert r2.client.meta.region_name == "auto"
    assert "X-Amz-Signature" in r2.url("outputs/2026/11/a_b_c.png", expires_in=60)  # private: presigned


async def test_r2_against_the_real_server(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    r2 = build_storage(
        make_settings(
            tmp_path,
            storage_provider="r2",
            r2_bucket_name=seaweedfs.new_bucket(),
            r2_access_key_id=seaweedfs.access_key,
            r2_secret_access_key=seaweedfs.secret_key,
            r2_endpoint=seaweedfs.endpoint,
        )
    )
    await r2.put("inputs/2026/11/1_a_x.jpg", b"\xff\xd8\xffdata", "image/jpeg")
    async with httpx.AsyncClient() as http:
        r = await http.get(r2.url("inputs/2026/11/1_a_x.jpg", expires_in=60))
    assert r.status_code == 200 and r.content == b"\xff\xd8\xffdata"


def test_missing_bucket_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="S3_BUCKET_NAME"):
        build_storage(make_settings(tmp_path, storage_provider="s3"))
    with pytest.raises(ValueError, match="R2_BUCKET_NAME"):
        build_storage(make_settings(tmp_path, storage_provider="r2"))


async def test_put_file_streams_a_staged_file_as_a_multipart_upload(
    storage: S3Storage, tmp_path: Path
) -> None:
    """Above 8 MiB the staged file is sent in parts (never read whole); the file is consumed."""
    from darkroom.storage.staging import StagingFile

    data = photo(64, 48) + secrets.token_bytes(12 * 2**20)
    staging = StagingFile(storage.staging_dir, "big.jpg")
    for offset in range(0, len(data), 65536):
        await staging.write(data[offset : offset + 65536])
    staged = await staging.finish()
    assert staged.size == len(data)
    key = new_key("inputs", "big.jpg", "image/jpeg")
    await storage.put_file(key, staged.path, "image/jpeg")
    assert not staged.path.exists()
    info = await storage.stat(key)
    assert info is not None and info.size == len(data) and info.content_type == "image/jpeg"
    assert await storage.get(key) == data
    head = await asyncio.to_thread(storage.client.head_object, Bucket=storage.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-2")  # two parts


async def test_put_file_failure_removes_the_staged_file(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    settings = {**seaweedfs.settings(seaweedfs.new_bucket()), "s3_secret_access_key": "not-the-key"}
    refused = build_storage(make_settings(tmp_path, **settings))
    path = refused.staging_dir / "upload-x"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"data")
    with pytest.raises(StorageError):
        await refused.put_file(new_key("inputs", "a.jpg", "image/jpeg"), path, "image/jpeg")
    assert not path.exists()
