"""POST /api/tasks reads its form as a stream (uploads/form.py): file parts go straight to a staging
file and then into storage. Fields in any order, every refusal with its code, nothing left behind
(no stored object, no staging file) after a refusal or a client that goes away mid-upload."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, File, Form, UploadFile
from starlette.requests import Request

from darkroom.storage import staging
from darkroom.storage.staging import SmallFile, StagedFile
from darkroom.tasks.endpoints import CREATE_TASK_FORM
from darkroom.uploads.form import SMALL_FILE_BYTES, FormLimits, read_form
from tests.seaweed import SeaweedFS
from tests.server import Server
from tests.support import photo, register, wait_for

Part = tuple[str, bytes] | tuple[str, bytes, str]  # (name, value) or (name, data, filename)


def multipart(*parts: Part, boundary: str | None = None, close: bool = True) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with the parts in exactly this order (httpx puts fields first)."""
    boundary = boundary or secrets.token_hex(12)
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\n".encode()
        if len(part) == 3:
            out += f'Content-Disposition: form-data; name="{part[0]}"; filename="{part[2]}"\r\n'.encode()
            out += b"Content-Type: application/octet-stream\r\n\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{part[0]}"\r\n\r\n'.encode()
        out += part[1] + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _leftovers(data_dir: Path) -> list[Path]:
    """Every file under the storage root: stored objects and staging files alike."""
    root = data_dir / "files"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def _post(client: httpx.AsyncClient, headers: dict[str, str], *parts: Part) -> httpx.Response:
    body, content_type = multipart(*parts)
    return await client.post("/api/tasks", headers={**headers, **content_type}, content=body)


async def _credits_and_tasks(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, int]:
    me = (await client.get("/api/me", headers=headers)).json()["data"]["credits"]
    total = (await client.get("/api/tasks", headers=headers)).json()["pagination"]["total"]
    return int(me), int(total)


@pytest.mark.parametrize(
    "order",
    [
        ("taskType", "parameters", "files"),
        ("files", "parameters", "taskType"),
        ("parameters", "files", "taskType"),
    ],
    ids=lambda o: "-".join(o),
)
async def test_fields_in_any_order(client: httpx.AsyncClient, tmp_path: Path, order: tuple[str, ...]) -> None:
    headers = await register(client)
    image = photo(96, 64)
    parts: dict[str, Part] = {
        "taskType": ("taskType", b"color_enhancement"),
        "parameters": ("parameters", json.dumps({"enhancement": "vivid"}).encode()),
        "files": ("files", image, "holiday.jpg"),
    }
    r = await _post(client, headers, *(parts[name] for name in order))
    assert r.status_code == 201, r.text
    task = await wait_for(client, headers, r.json()["data"]["id"])
    assert task["status"] == "completed" and task["inputParameters"]["enhancement"] == "vivid", task
    assert task["inputs"][0]["name"] == "holiday.jpg"
    got = await client.get(task["inputFiles"][0])
    assert got.status_code == 200 and got.content == image
    assert not list((tmp_path / "files" / "staging").iterdir())


async def test_parameters_after_the_file_are_still_validated(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    headers = await register(client)
    for params, code in [(b"{style:", "invalid_parameters"), (b'{"nope": 1}', "invalid_parameter")]:
        r = await _post(
            client,
            headers,
            ("files", photo(64, 64), "a.jpg"),
            ("parameters", params),
            ("taskType", b"color_enhancement"),
        )
        assert r.status_code == 422 and r.json()["code"] == code, r.text
    assert await _credits_and_tasks(client, headers) == (20, 0)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("parts", "status", "code"),
    [
        ([("files", photo(64, 64), "a.jpg")], 422, "validation_error"),  # no taskType
        (
            [("files", b"GIF89a" + b"\0" * 64, "a.gif"), ("taskType", b"color_enhancement")],
            415,
            "unsupported_image_type",
        ),
        ([("files", photo(64, 64)[:-40], "a.jpg"), ("taskType", b"color_enhancement")], 422, "corrupt_image"),
        ([("files", b"", "a.jpg"), ("taskType", b"color_enhancement")], 422, "empty_file"),
        (
            [
                ("files", photo(64, 64), "a.jpg"),
                ("files", photo(64, 64)[:100], "b.jpg"),
                ("taskType", b"color_enhancement"),
            ],
            422,
            "corrupt_image",
        ),
        (
            [("files", photo(64, 64), f"{i}.jpg") for i in range(6)] + [("taskType", b"color_enhancement")],
            422,
            "too_many_files",
        ),
        ([("taskType", b"color_enhancement")], 422, "no_files"),
    ],
    ids=["missing taskType", "gif", "truncated", "empty", "second file corrupt", "six files", "no files"],
)
async def test_refusals_store_nothing(
    client: httpx.AsyncClient, tmp_path: Path, parts: list[Part], status: int, code: str
) -> None:
    headers = await register(client)
    r = await _post(client, headers, *parts)
    assert r.status_code == status and r.json()["code"] == code, r.text
    assert await _credits_and_tasks(client, headers) == (20, 0)
    assert _leftovers(tmp_path) == []


async def test_not_a_form_or_a_broken_one_is_422(client: httpx.AsyncClient, tmp_path: Path) -> None:
    headers = await register(client)
    r = await client.post("/api/tasks", headers=headers, json={"taskType": "color_enhancement"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    body, content_type = multipart(
        ("taskType", b"color_enhancement"), ("files", photo(64, 64), "a.jpg"), close=False
    )
    r = await client.post("/api/tasks", headers={**headers, **content_type}, content=body[:-100])
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert await _credits_and_tasks(client, headers) == (20, 0)
    assert _leftovers(tmp_path) == []


async def test_a_file_over_the_limit_is_refused_mid_stream(client: httpx.AsyncClient, tmp_path: Path) -> None:
    """Sent without a Content-Length (chunked): refused as soon as the file passes 10 MB, without
    reading the rest of the body; nothing is left in storage."""
    headers = await register(client)
    head, content_type = multipart(("taskType", b"color_enhancement"), close=False)
    boundary = content_type["Content-Type"].rsplit("=", 1)[1]
    sent = 0
    total = 40 * 2**20

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        disposition = 'Content-Disposition: form-data; name="files"; filename="big.jpg"'
        yield head + f"--{boundary}\r\n{disposition}\r\n\r\n".encode()
        yield photo(64, 64)[:-2]
        chunk = b"\0" * 65536
        while sent < total:
            sent += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    r = await client.post("/api/tasks", headers={**headers, **content_type}, content=body())
    assert r.status_code == 413 and r.json()["code"] == "file_too_large", r.text
    assert sent < 12 * 2**20  # the rest was never read
    assert await _credits_and_tasks(client, headers) == (20, 0)
    assert _leftovers(tmp_path) == []


async def test_a_client_that_goes_away_mid_upload_leaves_nothing(tmp_path: Path) -> None:
    """A real server and a real socket closed halfway through the file."""
    server = Server(tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            headers = await register(http)
            head, content_type = multipart(("taskType", b"color_enhancement"), close=False)
            boundary = content_type["Content-Type"].rsplit("=", 1)[1]
            file_head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
            )
            length = len(head) + len(file_head) + 8 * 2**20
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            request = (
                f"POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {headers['Authorization']}\r\n"
                f"Content-Type: {content_type['Content-Type']}\r\nContent-Length: {length}\r\n\r\n"
            )
            writer.write(
                request.encode() + head + file_head.encode() + photo(64, 64)[:-2] + b"\0" * 3 * 2**20
            )
            await writer.drain()
            staging = tmp_path / "files" / "staging"
            for _ in range(100):  # the server has started writing the file
                if staging.exists() and any(p.stat().st_size > 0 for p in staging.iterdir()):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the upload never reached the staging directory")
            writer.close()
            await writer.wait_closed()
            for _ in range(100):
                if not _leftovers(tmp_path):
                    break
                await asyncio.sleep(0.05)
            assert _leftovers(tmp_path) == []
            assert await _credits_and_tasks(http, headers) == (20, 0)
            # the server is fine afterwards
            body, content_type = multipart(
                ("taskType", b"color_enhancement"), ("files", photo(64, 64), "a.jpg")
            )
            r = await http.post("/api/tasks", headers={**headers, **content_type}, content=body)
            assert r.status_code == 201, r.text
    finally:
        server.stop()


@pytest.mark.parametrize("padding", [0, SMALL_FILE_BYTES], ids=["small, in memory", "staged"])
async def test_a_file_is_stored_under_its_key_only_once_its_fsync_returned(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, padding: int
) -> None:
    """A staging file's fsync runs while the file is checked (uploads/inputs.py); it is moved to
    its key, and the task created, only after the fsync returned. A small file (kept in memory)
    is written to a temporary name beside its key, fsync'd, and only then renamed to its key."""
    headers = await register(client)
    release, waiting = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def held_fsync(fd: int) -> None:
        waiting.set()
        release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(staging.os, "fsync", held_fsync)
    image = photo(96, 64) + secrets.token_bytes(padding)  # bytes after the image's end are allowed
    post = asyncio.ensure_future(
        _post(client, headers, ("taskType", b"color_enhancement"), ("files", image, "a.jpg"))
    )
    try:
        assert await asyncio.to_thread(waiting.wait, 30)
        await asyncio.sleep(0.1)  # the check runs meanwhile; nothing may be stored yet
        assert not post.done()
        stored = [p for p in _leftovers(tmp_path) if "staging" not in p.parts and not p.name.endswith(".tmp")]
        assert stored == []
        assert await _credits_and_tasks(client, headers) == (20, 0)
    finally:
        release.set()
    r = await post
    assert r.status_code == 201, r.text
    assert [p.read_bytes() for p in _leftovers(tmp_path)] == [image]


async def _read_one_file(
    staging_dir: Path, data: bytes, *, chunk: int | None = None, boundary: str | None = None
) -> Any:
    """``read_form`` on a form with one file part, its body received in pieces of ``chunk``
    bytes (all at once by default): the form and its one file part."""
    body, headers = multipart(("taskType", b"x"), ("files", data, "a.jpg"), boundary=boundary)
    size = chunk or len(body)
    messages = iter(
        [
            {"type": "http.request", "body": body[i : i + size], "more_body": True}
            for i in range(0, len(body), size)
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.request", "body": b"", "more_body": False})

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", headers["Content-Type"].encode())],
    }
    form = await read_form(Request(scope, receive), staging_dir, FormLimits(10 * 2**20, 10, 5))
    (part,) = form.files["files"]
    return form, part


async def test_parts_split_anywhere_are_staged_byte_for_byte(tmp_path: Path) -> None:
    """python-multipart hands file data to the reader as pieces of the received chunks and of the
    boundary (a partial boundary match that was data after all): staged as views, not copies,
    they must still be the file's bytes, whatever the chunk size."""
    boundary = "b0undary"
    head = b"\r\n--b0und" + secrets.token_bytes(300) + b"\r\n--b0undar\r\n" + secrets.token_bytes(300)
    for chunk, data in [
        (1, head),
        (7, head * 20),
        (4096, head * 20),
        (65536, head + secrets.token_bytes(3 * 2**20)),
    ]:
        form, staged = await _read_one_file(tmp_path, data, chunk=chunk, boundary=boundary)
        try:
            if len(data) <= SMALL_FILE_BYTES:
                assert isinstance(staged, SmallFile) and staged.data == data, chunk
            else:
                assert isinstance(staged, StagedFile)
                await staged.durable()
                assert staged.path.read_bytes() == data, chunk
        finally:
            form.discard()


async def test_a_small_file_stays_in_memory_and_a_bigger_one_is_staged(tmp_path: Path) -> None:
    """Up to SMALL_FILE_BYTES a file part is kept in memory (no staging file is made: stored with
    one write); one byte more and it is written to a staging file, as every big upload is."""
    small = secrets.token_bytes(SMALL_FILE_BYTES)
    form, part = await _read_one_file(tmp_path / "staging", small)
    assert isinstance(part, SmallFile) and part.data == small and part.size == SMALL_FILE_BYTES
    assert part.name == "a.jpg"
    assert not (tmp_path / "staging").exists()  # nothing was ever created
    form.discard()

    bigger = small + b"x"
    form, part = await _read_one_file(tmp_path / "staging", bigger)
    try:
        assert isinstance(part, StagedFile)
        await part.durable()
        assert part.path.read_bytes() == bigger and part.size == len(bigger)
        assert list((tmp_path / "staging").iterdir()) == [part.path]
    finally:
        form.discard()
    assert list((tmp_path / "staging").iterdir()) == []


@pytest.fixture(params=["local", "s3"])
async def any_storage_client(
    request: pytest.FixtureRequest, app_client: Any
) -> AsyncIterator[httpx.AsyncClient]:
    overrides: dict[str, Any] = {}
    if request.param == "s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        overrides = seaweedfs.settings(seaweedfs.new_bucket())
    async with app_client(**overrides) as c:
        yield c


async def test_a_ten_mb_upload_end_to_end(any_storage_client: httpx.AsyncClient) -> None:
    """Just under the 10 MB limit (bytes after EOI are allowed): stored byte for byte, and the
    task runs on it."""
    client = any_storage_client
    headers = await register(client)
    image = photo(320, 240)
    image += secrets.token_bytes(10 * 2**20 - len(image) - 1)
    r = await _post(client, headers, ("files", image, "big.jpg"), ("taskType", b"color_enhancement"))
    assert r.status_code == 201, r.text
    task = await wait_for(client, headers, r.json()["data"]["id"])
    assert task["status"] == "completed", task
    url = task["inputFiles"][0]
    if url.startswith(str(client.base_url)) or url.startswith("/"):
        got = await client.get(url)
    else:
        async with httpx.AsyncClient() as http:
            got = await http.get(url)
    assert got.status_code == 200 and got.content == image


async def test_refusal_leaves_nothing_in_the_bucket(
    app_client: Any, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    async with app_client(**seaweedfs.settings(seaweedfs.new_bucket())) as client:
        headers = await register(client)
        for image in (photo(64, 64), photo(64, 64) + secrets.token_bytes(SMALL_FILE_BYTES)):  # memory, staged
            r = await _post(client, headers, ("files", image, "a.jpg"), ("taskType", b"sharpen_everything"))
            assert r.status_code == 422 and r.json()["code"] == "unknown_task_type"
            storage = client.app.state.ctx.storage  # type: ignore[attr-defined]
            assert await storage.list_keys(f"inputs/{datetime.now(UTC):%Y/%m}/") == []
            assert not storage.staging_dir.exists() or not list(storage.staging_dir.iterdir())


def test_openapi_documents_the_same_form_as_file_and_form_parameters() -> None:
    """The schema FastAPI generated when the endpoint took File()/Form() parameters."""
    app = FastAPI()

    @app.post("/api/tasks")
    async def create_task(
        task_type: Annotated[str, Form(alias="taskType", description="e.g. background_removal")],
        files: Annotated[list[UploadFile] | None, File(description="1–5 JPEG, PNG or WebP images")] = None,
        parameters: Annotated[str | None, Form(description="A JSON object as a string")] = None,
        upload_ids: Annotated[
            list[str] | None,
            Form(alias="uploadIds", description="Ids from POST /api/uploads, instead of files"),
        ] = None,
    ) -> None: ...

    generated = app.openapi()["components"]["schemas"]["Body_create_task_api_tasks_post"]
    assert generated == CREATE_TASK_FORM


async def test_openapi_of_the_app_shows_the_form(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    body = spec["paths"]["/api/tasks"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["multipart/form-data"]["schema"] == CREATE_TASK_FORM
