"""Overheads of the external-provider path, as ratios against baselines.

    .venv/bin/python -m bench.providers

1. SafeDownloader (allow-list, resolve once, address checks, connect to the checked IP, streaming
   with a size cap, image sniffing) vs a plain httpx GET of the same 4 MB image on loopback.
2. A text_to_image task through the real app and TaskRunner with the OpenAI provider talking HTTP
   to the loopback fake vs the same task with an in-process scripted provider (no HTTP): the cost
   our provider plumbing (HTTP, retries wrapper, base64 decode, full image decode) adds per task.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.conftest import make_settings
from tests.doubles import ScriptedProvider
from tests.providers.fakes.openai import KEY, FakeOpenAI
from tests.providers.fakes.server import serve
from tests.support import register, submit, wait_for

from darkroom.app import create_app
from darkroom.providers.download import DownloadPolicy, SafeDownloader
from darkroom.providers.factory import external_providers


def _big_png() -> bytes:
    img = Image.effect_noise((1400, 1000), 64).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=0)
    return buf.getvalue()


async def bench_download(rounds: int = 30) -> None:
    data = _big_png()

    async def image(_: Request) -> Response:
        return Response(data, media_type="image/png")

    async with serve(Starlette(routes=[Route("/img.png", image)])) as base:
        url = f"{base}/img.png"
        safe = SafeDownloader(DownloadPolicy(allowed_hosts=["127.0.0.1"], trusted_hosts=["127.0.0.1"]))
        async with httpx.AsyncClient() as plain:
            for _ in range(3):
                await plain.get(url)
                await safe.fetch(url)
            t_plain, t_safe = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                assert len((await plain.get(url)).content) == len(data)
                t_plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                assert len(await safe.fetch(url)) == len(data)
                t_safe.append(time.perf_counter() - t0)
        await safe.aclose()
    p, s = statistics.median(t_plain), statistics.median(t_safe)
    print(
        f"download {len(data) / 2**20:.1f} MB: plain httpx {p * 1000:.1f} ms, "
        f"SafeDownloader {s * 1000:.1f} ms, ratio {s / p:.2f}"
    )


async def _task_latency(
    providers: list[Any], settings: dict[str, Any], task_type: str, params: dict[str, Any], n: int
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(make_settings(Path(tmp), **settings), providers=providers)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                headers = await register(client)
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    r = await submit(client, headers, task_type, [], params)
                    task = await wait_for(client, headers, r.json()["data"]["id"])
                    assert task["status"] == "completed", task
                    times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def bench_task(n: int = 15) -> None:
    common = {"signup_credits": 1000, "worker_concurrency": 1}
    scripted = ScriptedProvider("scripted", ("text_to_image",))
    from darkroom.providers.specs import TEXT_TO_IMAGE_SPEC

    scripted.capabilities = lambda: {"text_to_image": TEXT_TO_IMAGE_SPEC}  # type: ignore[method-assign]
    base = await _task_latency(
        [scripted], {**common, "default_ai_provider": "scripted"}, "text_to_image", {"prompt": "x"}, n
    )
    fake = FakeOpenAI()
    async with serve(fake.app) as url:
        settings = {
            **common,
            "openai_api_key": KEY,
            "openai_base_url": f"{url}/v1",
            "default_ai_provider": "openai",
        }
        with tempfile.TemporaryDirectory() as tmp:
            providers = external_providers(make_settings(Path(tmp), **settings))
        real = await _task_latency(providers, settings, "text_to_image", {"prompt": "x"}, n)
        for p in providers:
            await p.aclose()
    print(
        f"text_to_image task create→completed (median of {n}): in-process double {base * 1000:.0f} ms, "
        f"OpenAI over loopback HTTP {real * 1000:.0f} ms, ratio {real / base:.2f}"
    )


async def main() -> None:
    await bench_download()
    await bench_task()


if __name__ == "__main__":
    asyncio.run(main())
