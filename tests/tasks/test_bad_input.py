"""Every malformed request: a 4xx with a stable code, nothing charged, nothing stored."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support import photo, register, submit, wait_for


def _png_header(width: int, height: int, idat: bytes | None = None) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    # A well-formed PNG whose header claims a huge canvas: the IDAT is a few bytes of zlib that
    # would inflate to gigabytes. It must be refused from the header alone.
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = idat if idat is not None else zlib.compress(b"\0" * 65536, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _png_bad_crc() -> bytes:
    data = bytearray(photo(200, 200, "PNG"))
    data[-12 - 4 - 1] ^= 0x01  # the last byte of the last IDAT's data: its CRC no longer matches
    return bytes(data)


def _png_undecodable() -> bytes:
    """Well-formed (chunks, CRCs, IEND) but its compressed data is far too short for its rows:
    passes the upload's structure check, fails the decode in the provider."""
    return _png_header(64, 64, idat=zlib.compress(b"\0" * 64))  # 64 rows of 1 + 192 bytes are needed


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "GIF")
    return buf.getvalue()


CASES: list[tuple[str, dict[str, object], int, str]] = [
    (
        "text named .jpg",
        {"images": [b"hello, I am not an image" * 10], "names": ["x.jpg"]},
        415,
        "unsupported_image_type",
    ),
    ("gif", {"images": [_gif()]}, 415, "unsupported_image_type"),
    ("truncated jpeg", {"images": [photo(200, 200)[:600]]}, 422, "corrupt_image"),
    ("jpeg without EOI", {"images": [photo(200, 200)[:-2]]}, 422, "corrupt_image"),
    ("truncated png", {"images": [photo(200, 200, "PNG")[:-20]]}, 422, "corrupt_image"),
    ("png with a bad CRC", {"images": [_png_bad_crc()]}, 422, "corrupt_image"),
    ("truncated webp", {"images": [photo(200, 200, "WEBP")[:-10]]}, 422, "corrupt_image"),
    (
        "png garbage after header",
        {"images": [photo(200, 200, "PNG")[:33] + b"junk" * 64]},
        422,
        "corrupt_image",
    ),
    ("png bomb header", {"images": [_png_header(30000, 30000)]}, 422, "image_too_large"),
    ("empty file", {"images": [b""]}, 422, "empty_file"),
    ("no files", {"images": []}, 422, "no_files"),
    ("six files", {"images": [photo(32, 32)] * 6}, 422, "too_many_files"),
    ("unknown type", {"task_type": "sharpen_everything"}, 422, "unknown_task_type"),
    ("text_to_image without provider", {"task_type": "text_to_image"}, 422, "task_type_unavailable"),
    ("params not json", {"parameters": "{style:"}, 422, "invalid_parameters"),
    ("params a list", {"parameters": "[1, 2]"}, 422, "invalid_parameters"),
    ("unknown parameter", {"parameters": {"nope": 1}}, 422, "invalid_parameter"),
    ("bad enhancement", {"parameters": {"enhancement": "psychedelic"}}, 422, "invalid_parameter"),
    ("wrong param type", {"parameters": {"enhancement": 5}}, 422, "invalid_parameter"),
]


@pytest.mark.parametrize(("label", "case", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_cleanly(
    client: httpx.AsyncClient, tmp_path: Path, label: str, case: dict[str, object], status: int, code: str
) -> None:
    headers = await register(client)
    task_type = str(case.get("task_type", "color_enhancement"))
    images = case.get("images", [photo(64, 64)])
    names = case.get("names")
    r = await submit(client, headers, task_type, images, case.get("parameters"), names)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["code"] == code and body["message"]
    assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20
    assert (await client.get("/api/tasks", headers=headers)).json()["pagination"]["total"] == 0
    stored = list((tmp_path / "files").rglob("*.*")) if (tmp_path / "files").exists() else []
    assert stored == []


async def test_file_over_the_size_limit_is_413(client: httpx.AsyncClient, tmp_path: Path) -> None:
    headers = await register(client)
    big = photo(64, 64) + b"\0" * (10 * 1024 * 1024)
    r = await submit(client, headers, "color_enhancement", [big])
    assert r.status_code == 413 and r.json()["code"] == "file_too_large"
    assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20


async def test_whole_request_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    chunk = b"\0" * (20 * 1024 * 1024)
    r = await submit(client, headers, "color_enhancement", [chunk, chunk, chunk])
    assert r.status_code == 413 and r.json()["code"] == "request_too_large"


async def test_pixel_limit_is_configurable(app_client) -> None:  # type: ignore[no-untyped-def]
    async with app_client(max_pixels=100 * 100) as client:
        headers = await register(client)
        r = await submit(client, headers, "color_enhancement", [photo(101, 100)])
        assert r.status_code == 422 and r.json()["code"] == "image_too_large"


async def test_client_sent_credits_are_ignored(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    r = await submit(client, headers, "color_enhancement", [photo(64, 64)], {"credits": 0})
    assert r.status_code == 201 and r.json()["data"]["cost"] == 1
    files = [("files", ("a.jpg", photo(64, 64), "image/jpeg"))]
    r = await client.post(
        "/api/tasks",
        headers=headers,
        files=files,
        data={"taskType": "color_enhancement", "credits": "0", "parameters": json.dumps({})},
    )
    assert r.status_code == 201 and r.json()["data"]["cost"] == 1


async def test_not_enough_credits_is_402_and_stores_nothing(
    app_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    async with app_client(signup_credits=1) as client:
        headers = await register(client)
        r = await submit(client, headers, "style_transfer", [photo(64, 64)])  # costs 2
        assert r.status_code == 402
        assert r.json()["code"] == "insufficient_credits"
        assert (await client.get("/api/tasks", headers=headers)).json()["pagination"]["total"] == 0
        assert not list((tmp_path / "files").rglob("*.*")) if (tmp_path / "files").exists() else True


async def test_upload_that_passes_the_structure_check_but_does_not_decode(client: httpx.AsyncClient) -> None:
    """The upload checks structure only; the full decode is the provider's. Such a task fails
    with invalid_input and its reserved credits are released in full."""
    headers = await register(client)
    r = await submit(client, headers, "color_enhancement", [_png_undecodable()], names=["x.png"])
    assert r.status_code == 201, r.text
    task = r.json()["data"]
    assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20 - task["cost"]
    failed = await wait_for(client, headers, task["id"])
    assert failed["status"] == "failed" and failed["errorCode"] == "invalid_input", failed
    assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 20
