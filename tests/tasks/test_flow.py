"""The whole flow for each built-in task type, with the real ONNX models."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from PIL import ImageChops

from tests.support import open_image, photo, register, submit, wait_for


async def _download(client: httpx.AsyncClient, url: str) -> bytes:
    r = await client.get(url)
    assert r.status_code == 200, r.text
    return r.content


async def test_background_removal(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    source = photo(400, 300)
    r = await submit(client, headers, "background_removal", [source])
    assert r.status_code == 201, r.text
    task = r.json()["data"]
    assert task["status"] == "pending" and task["cost"] == 1 and task["taskNo"].startswith("T")
    assert len(task["taskNo"]) == 19 and task["aiProvider"] == "local"

    done = await wait_for(client, headers, task["id"])
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and done["completedAt"] and done["startedAt"]
    # the attempt's history (written by UPDATEs in the claim and the finish): started, then finished
    full = (await client.get(f"/api/tasks/{task['id']}", headers=headers)).json()["data"]
    [attempt] = full["attempts"]
    assert attempt["status"] == "completed" and attempt["errorCode"] is None
    assert attempt["createdAt"] <= attempt["startedAt"] <= attempt["finishedAt"]
    [url] = done["resultUrls"]
    out = open_image(await _download(client, url))
    assert out.format == "PNG" and out.mode == "RGBA" and out.size == (400, 300)
    alpha = np.asarray(out.getchannel("A"))
    assert alpha.min() < 20 and alpha.max() > 235  # some background removed, some subject kept
    # the model process wrote the result into the staging folder and the runner moved it from there
    staging_dir = client.app.state.ctx.storage.staging_dir  # type: ignore[attr-defined]
    assert list(staging_dir.iterdir()) == []

    me = (await client.get("/api/me", headers=headers)).json()["data"]
    assert me["credits"] == 19
    ledger = (await client.get("/api/credits", headers=headers)).json()["data"]["transactions"]
    assert [t["type"] for t in ledger] == ["capture", "reserve", "grant"]
    assert sum(t["amount"] for t in ledger) == 19


@pytest.mark.parametrize("params", [{}, {"style": None}])
async def test_style_transfer(client: httpx.AsyncClient, params: dict[str, object]) -> None:
    headers = await register(client)
    types = (await client.get("/api/task-types")).json()["data"]
    style_spec = next(t for t in types if t["taskType"] == "style_transfer")["parameters"]["style"]
    assert len(style_spec["allowed"]) == 26
    if "style" in params:
        params = {"style": style_spec["allowed"][-1]}
    source = photo(320, 200)
    r = await submit(client, headers, "style_transfer", [source], params)
    assert r.status_code == 201, r.text
    done = await wait_for(client, headers, r.json()["data"]["id"])
    assert done["status"] == "completed", done
    out = open_image(await _download(client, done["resultUrls"][0])).convert("RGB")
    assert out.size == (320, 200)
    diff = np.asarray(ImageChops.difference(out, open_image(source).convert("RGB")), dtype=np.float32)
    assert diff.mean() > 10  # really restyled
    assert (await client.get("/api/me", headers=headers)).json()["data"]["credits"] == 18


async def test_style_transfer_with_a_style_image(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    style = photo(256, 256, "PNG")
    r = await submit(client, headers, "style_transfer", [photo(300, 200), style])
    assert r.status_code == 201, r.text
    done = await wait_for(client, headers, r.json()["data"]["id"])
    assert done["status"] == "completed", done
    assert len(done["resultUrls"]) == 1
    assert open_image(await _download(client, done["resultUrls"][0])).size == (300, 200)


@pytest.mark.parametrize("enhancement", ["auto", "vivid", "warm", "cool", "black_and_white"])
async def test_color_enhancement(client: httpx.AsyncClient, enhancement: str) -> None:
    headers = await register(client)
    sources = [photo(300, 200), photo(200, 300, "PNG")]
    r = await submit(client, headers, "color_enhancement", sources, {"enhancement": enhancement})
    assert r.status_code == 201, r.text
    done = await wait_for(client, headers, r.json()["data"]["id"])
    assert done["status"] == "completed", done
    assert len(done["resultUrls"]) == 2
    for source, url in zip(sources, done["resultUrls"], strict=True):
        before = open_image(source).convert("RGB")
        after = open_image(await _download(client, url)).convert("RGB")
        assert after.size == before.size
        diff = np.asarray(ImageChops.difference(after, before), dtype=np.float32)
        assert diff.mean() > 1.0, enhancement


async def test_results_strip_metadata_and_apply_orientation(client: httpx.AsyncClient) -> None:
    from PIL import Image

    headers = await register(client)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise for display
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 0.0)  # GPSLatitude
    source = photo(300, 200, exif=exif.tobytes())
    r = await submit(client, headers, "color_enhancement", [source], {"enhancement": "vivid"})
    done = await wait_for(client, headers, r.json()["data"]["id"])
    out = open_image(await _download(client, done["resultUrls"][0]))
    assert out.size == (200, 300)  # upright
    assert not out.getexif() and "exif" not in out.info


async def test_task_reads_list_and_status(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    ids = []
    for _ in range(3):
        r = await submit(client, headers, "color_enhancement", [photo(64, 64)], {"enhancement": "warm"})
        ids.append(r.json()["data"]["id"])
    for task_id in ids:
        await wait_for(client, headers, task_id)

    page = (await client.get("/api/tasks?limit=2", headers=headers)).json()
    assert [t["id"] for t in page["data"]] == ids[::-1][:2]
    assert page["pagination"] == {"total": 3, "limit": 2, "offset": 0, "hasMore": True}
    page = (await client.get("/api/tasks?limit=2&offset=2", headers=headers)).json()
    assert [t["id"] for t in page["data"]] == ids[:1] and page["pagination"]["hasMore"] is False
    assert (await client.get("/api/tasks?status=failed", headers=headers)).json()["pagination"]["total"] == 0
    assert (await client.get("/api/tasks?status=bogus", headers=headers)).status_code == 422

    task = (await client.get(f"/api/tasks/{ids[0]}", headers=headers)).json()["data"]
    assert task["inputParameters"]["enhancement"] == "warm"
    assert [a["status"] for a in task["attempts"]] == ["completed"]
    assert len(task["inputFiles"]) == 1 and task["inputs"][0]["name"] == "photo0.jpg"

    r = await client.get(f"/api/tasks/{ids[0]}/status", headers=headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "completed"
    etag = r.headers["etag"]
    r = await client.get(f"/api/tasks/{ids[0]}/status", headers={**headers, "If-None-Match": etag})
    assert r.status_code == 304


async def test_other_users_cannot_see_a_task(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    r = await submit(client, alice, "color_enhancement", [photo(64, 64)])
    task_id = r.json()["data"]["id"]
    for method, path in (("GET", ""), ("GET", "/status"), ("POST", "/retry"), ("POST", "/cancel")):
        r = await client.request(method, f"/api/tasks/{task_id}{path}", headers=bob)
        assert r.status_code == 404 and r.json()["code"] == "task_not_found", path
    assert (await client.get("/api/tasks", headers=bob)).json()["pagination"]["total"] == 0


async def test_file_urls_are_signed_and_expire(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    r = await submit(client, headers, "color_enhancement", [photo(64, 64)])
    done = await wait_for(client, headers, r.json()["data"]["id"])
    url = done["resultUrls"][0]
    assert (await client.get(url)).status_code == 200
    tampered = url.replace("sig=", "sig=0")
    assert (await client.get(tampered)).status_code == 404
    path, _, query = url.partition("?")
    expired = f"{path}?expires=1000&sig=" + query.split("sig=")[1]
    assert (await client.get(expired)).json()["code"] == "file_not_found"
    download = await client.get(done["results"][0]["downloadUrl"])
    assert "attachment" in download.headers["content-disposition"]
