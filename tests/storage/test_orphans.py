"""The sweep of stored objects that no row refers to (a crash between a file write and its row)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from darkroom.app import build_storage
from darkroom.models import TaskFile
from darkroom.storage.orphans import sweep_orphans
from darkroom.storage.s3 import S3Storage
from tests.conftest import AppFactory, make_settings
from tests.seaweed import SeaweedFS
from tests.support import register, submit, wait_for

HOUR = 3600.0


def key_at(folder: str, at: float, name: str, ext: str = "png") -> str:
    day = datetime.fromtimestamp(at, UTC)
    return f"{folder}/{day:%Y/%m}/{int(at * 1000)}_{name}.{ext}"


@pytest.fixture
async def client(app_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(orphan_sweep_after_seconds=0) as c:  # no background sweep: the test sweeps
        yield c


async def test_sweep_deletes_only_old_objects_that_no_row_names(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    created = await submit(client, headers, "color_enhancement")
    assert created.status_code == 201, created.text
    task = await wait_for(client, headers, created.json()["data"]["id"])
    assert task["status"] == "completed"
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    async with ctx.db.transaction(write=False) as session:
        kept = set(await session.scalars(select(TaskFile.storage_key)))
    assert {k.split("/")[0] for k in kept} == {"inputs", "outputs"}

    now = time.time() + 2 * HOUR  # every object of this test is older than an hour by then
    crashed_output = key_at("outputs", now - 1.5 * HOUR, "dead00_T1_1")
    crashed_input = key_at("inputs", now - 3 * HOUR, "dead01_photo", "jpg")
    last_month = key_at("outputs", now - 35 * 86400, "dead02_T2_1")
    too_young = key_at("outputs", now - 0.5 * HOUR, "live00_T3_1")  # maybe its row is on its way
    other_folder = key_at("uploads", now - 3 * HOUR, "dead03_photo", "jpg")  # swept with its upload row
    for key in (crashed_output, crashed_input, last_month, too_young, other_folder):
        await ctx.storage.put(key, b"bytes", "image/png")

    deleted = await sweep_orphans(ctx, grace_seconds=HOUR, now=now)

    assert sorted(deleted) == sorted([crashed_output, crashed_input, last_month])
    for key in deleted:
        assert not await ctx.storage.exists(key)
    for key in (*kept, too_young, other_folder):
        assert await ctx.storage.exists(key), key
    result = await client.get(task["results"][0]["url"])  # the task's files still download
    assert result.status_code == 200
    assert await sweep_orphans(ctx, grace_seconds=HOUR, now=now) == []


async def test_sweep_pages_through_many_keys(client: httpx.AsyncClient) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    start = time.time() - 5 * HOUR
    keys = [key_at("outputs", start + i, f"many{i:04d}_x") for i in range(1203)]
    for key in keys:
        await ctx.storage.put(key, b"x", "image/png")
    deleted = await sweep_orphans(ctx, grace_seconds=HOUR)
    assert deleted == keys


@pytest.fixture
def s3(seaweedfs: SeaweedFS, tmp_path: Path) -> S3Storage:
    built = build_storage(make_settings(tmp_path, **seaweedfs.settings(seaweedfs.new_bucket())))
    assert isinstance(built, S3Storage)
    return built


async def test_s3_lists_keys_in_order_after_a_key(s3: S3Storage) -> None:
    at = time.time() - HOUR
    keys = [key_at("outputs", at + i, f"k{i}_x") for i in range(5)]
    for key in reversed(keys):
        await s3.put(key, b"x", "image/png")
    await s3.put(key_at("inputs", at, "other_x"), b"x", "image/png")
    prefix = keys[0].rsplit("/", 1)[0] + "/"
    assert await s3.list_keys(prefix) == keys
    assert await s3.list_keys(prefix, start_after=keys[1], limit=2) == keys[2:4]
    assert await s3.list_keys("outputs/1999/01/") == []


async def test_the_reaper_loop_sweeps(app_client: AppFactory, tmp_path: Path) -> None:
    old = key_at("outputs", time.time() - 2 * HOUR, "dead_T9_1")  # left by a crash before start-up
    await build_storage(make_settings(tmp_path)).put(old, b"x", "image/png")
    async with app_client(orphan_sweep_after_seconds=HOUR, reaper_interval_seconds=0.05) as c:
        ctx = c.app.state.ctx  # type: ignore[attr-defined]
        assert ctx.storage.name == "local"
        deadline = time.monotonic() + 30
        while await ctx.storage.exists(old):
            assert time.monotonic() < deadline, "the reaper loop never swept"
            await asyncio.sleep(0.05)


async def test_sweep_removes_staging_files_of_interrupted_uploads(client: httpx.AsyncClient) -> None:
    """A process killed mid-upload leaves its staging file; the sweep removes it after the grace
    period, and leaves a file still being written alone."""
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    staging_dir = ctx.storage.staging_dir
    staging_dir.mkdir(parents=True, exist_ok=True)
    old, fresh = staging_dir / "upload-dead", staging_dir / "upload-live"
    old.write_bytes(b"half a file")
    fresh.write_bytes(b"being written")
    now = time.time()
    os.utime(old, (now - 2 * HOUR, now - 2 * HOUR))
    await sweep_orphans(ctx, grace_seconds=HOUR, now=now)
    assert not old.exists() and fresh.exists()
