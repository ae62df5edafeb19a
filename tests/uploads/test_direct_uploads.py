"""Direct uploads, with local storage (our signed PUT endpoint) and with S3 (SeaweedFS): the
same API in both modes. Every refusal is a 4xx with a code, nothing is charged, and a refused
object is deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.seaweed import SeaweedFS
from tests.support import photo, register, wait_for
from tests.tasks.test_bad_input import _png_header


@pytest.fixture(params=["local", "s3"])
async def client(request: pytest.FixtureRequest, app_client: Any) -> AsyncIterator[httpx.AsyncClient]:
    overrides: dict[str, Any] = {}
    if request.param == "s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        overrides = seaweedfs.settings(seaweedfs.new_bucket())
    async with app_client(**overrides) as c:
        yield c


async def _put(
    client: httpx.AsyncClient, upload: dict[str, Any], data: bytes, **headers: str
) -> httpx.Response:
    """PUT like a browser would: to our own server (through the test client) or to the bucket."""
    sent = {**upload["headers"], **headers}
    if upload["url"].startswith(str(client.base_url)):
        return await client.put(upload["url"], content=data, headers=sent)
    async with httpx.AsyncClient() as http:
        return await http.put(upload["url"], content=data, headers=sent)


async def _get(client: httpx.AsyncClient, url: str) -> httpx.Response:
    if url.startswith(str(client.base_url)):
        return await client.get(url)
    async with httpx.AsyncClient() as http:
        return await http.get(url)


async def _ask(
    client: httpx.AsyncClient, headers: dict[str, str], *files: tuple[str, str, int]
) -> list[dict[str, Any]]:
    body = {"files": [{"name": n, "contentType": t, "size": s} for n, t, s in files]}
    r = await client.post("/api/uploads", headers=headers, json=body)
    assert r.status_code == 201, r.text
    uploads: list[dict[str, Any]] = r.json()["data"]
    return uploads


async def _create(client: httpx.AsyncClient, headers: dict[str, str], *upload_ids: str) -> httpx.Response:
    data = {"taskType": "color_enhancement", "uploadIds": list(upload_ids)}
    return await client.post("/api/tasks", headers=headers, data=data)


async def _key(client: httpx.AsyncClient, upload: dict[str, Any]) -> str:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    from sqlalchemy import select

    from darkroom.models import Upload

    async with ctx.db.transaction(write=False) as session:
        key = await session.scalar(select(Upload.storage_key).where(Upload.id == upload["uploadId"]))
    assert key is not None
    return str(key)


async def _exists(client: httpx.AsyncClient, upload: dict[str, Any]) -> bool:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    return bool(await ctx.storage.exists(await _key(client, upload)))


async def _balance(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return int((await client.get("/api/me", headers=headers)).json()["data"]["credits"])


async def test_upload_then_create_task_from_it(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    image = photo(120, 80)
    [upload] = await _ask(client, headers, ("photo.jpg", "image/jpeg", len(image)))
    assert upload["method"] == "PUT" and upload["headers"] == {"Content-Type": "image/jpeg"}
    assert (await _put(client, upload, image)).status_code == 200
    r = await _create(client, headers, upload["uploadId"])
    assert r.status_code == 201, r.text
    task = await wait_for(client, headers, r.json()["data"]["id"])
    assert task["status"] == "completed" and task["inputs"][0]["name"] == "photo.jpg"
    # The input is a copy under a key of ours; the uploaded object (still PUT-able) is gone.
    assert not await _exists(client, upload)
    got = await _get(client, task["inputFiles"][0])
    assert got.status_code == 200 and got.content == image
    again = await _create(client, headers, upload["uploadId"])
    assert again.status_code == 409 and again.json()["code"] == "upload_already_used"


async def test_uploads_belong_to_their_user(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    image = photo(64, 64)
    [upload] = await _ask(client, alice, ("a.jpg", "image/jpeg", len(image)))
    assert (await _put(client, upload, image)).status_code == 200
    r = await _create(client, bob, upload["uploadId"])
    assert r.status_code == 404 and r.json()["code"] == "upload_not_found"
    assert await _exists(client, upload)  # still Alice's to use
    assert (await _create(client, alice, upload["uploadId"])).status_code == 201


async def test_not_uploaded_yet(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    [upload] = await _ask(client, headers, ("a.jpg", "image/jpeg", 1000))
    r = await _create(client, headers, upload["uploadId"])
    assert r.status_code == 422 and r.json()["code"] == "upload_missing"


@pytest.mark.parametrize(
    ("declared", "data", "status", "code"),
    [
        ("image/jpeg", b"<html>not an image</html>" * 20, 415, "unsupported_image_type"),
        ("image/png", photo(64, 64), 415, "upload_type_mismatch"),
        ("image/jpeg", photo(200, 200)[:700], 422, "corrupt_image"),
        ("image/png", _png_header(30000, 30000), 422, "image_too_large"),
    ],
)
async def test_bad_objects_are_refused_and_deleted(
    client: httpx.AsyncClient, declared: str, data: bytes, status: int, code: str
) -> None:
    headers = await register(client)
    before = await _balance(client, headers)
    [upload] = await _ask(client, headers, ("x", declared, len(data)))
    assert (await _put(client, upload, data)).status_code == 200
    assert await _exists(client, upload)
    r = await _create(client, headers, upload["uploadId"])
    assert r.status_code == status and r.json()["code"] == code, r.text
    assert not await _exists(client, upload)
    assert await _balance(client, headers) == before
    assert (await client.get("/api/tasks", headers=headers)).json()["pagination"]["total"] == 0


async def test_upload_urls_refuse_other_types_lengths_and_forgeries(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    image = photo(64, 64)
    [upload] = await _ask(client, headers, ("a.jpg", "image/jpeg", len(image)))
    assert (await _put(client, upload, image, **{"Content-Type": "text/html"})).status_code == 403
    assert (await _put(client, upload, image + b"extra")).status_code == 403
    assert (await _put(client, upload, image[:-1])).status_code == 403
    forged = dict(upload, url=upload["url"].replace("Signature=", "Signature=0").replace("sig=", "sig=0"))
    assert (await _put(client, forged, image)).status_code == 403
    assert not await _exists(client, upload)
    staging = client.app.state.ctx.storage.staging_dir  # type: ignore[attr-defined]
    assert not staging.exists() or not list(staging.iterdir())  # refused bodies left no staging file


async def test_asking_for_uploads_is_validated(client: httpx.AsyncClient) -> None:
    headers = await register(client)

    async def ask(files: list[dict[str, Any]]) -> httpx.Response:
        return await client.post("/api/uploads", headers=headers, json={"files": files})

    r = await ask([{"name": "a.gif", "contentType": "image/gif", "size": 10}])
    assert r.status_code == 415 and r.json()["code"] == "unsupported_image_type"
    r = await ask([{"name": "a.jpg", "contentType": "image/jpeg", "size": 11 * 2**20}])
    assert r.status_code == 413 and r.json()["code"] == "file_too_large"
    r = await ask([{"contentType": "image/jpeg", "size": 10}] * 6)
    assert r.status_code == 422 and r.json()["code"] == "too_many_files"
    r = await ask([{"contentType": "image/jpeg", "size": 0}])
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await client.post("/api/uploads", json={"files": [{"contentType": "image/jpeg", "size": 5}]})
    assert r.status_code == 401
    r = await _create(client, headers, "no-such-upload")
    assert r.status_code == 404 and r.json()["code"] == "upload_not_found"


async def test_unused_uploads_are_swept(client: httpx.AsyncClient) -> None:
    from datetime import timedelta

    from darkroom.uploads.service import sweep_unused

    headers = await register(client)
    image = photo(32, 32)
    unused, used = await _ask(
        client, headers, ("a.jpg", "image/jpeg", len(image)), ("b.jpg", "image/jpeg", len(image))
    )
    for upload in (unused, used):
        assert (await _put(client, upload, image)).status_code == 200
    assert (await _create(client, headers, used["uploadId"])).status_code == 201
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    key = await _key(client, unused)
    assert await sweep_unused(ctx) == 0  # not expired yet
    assert await sweep_unused(ctx, keep=timedelta(seconds=-3600)) == 1
    assert not await ctx.storage.exists(key)
    r = await _create(client, headers, unused["uploadId"])
    assert r.status_code == 404 and r.json()["code"] == "upload_not_found"
