"""The LocalProvider end to end: real process pool, real models."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from darkroom.providers.base import (
    InputImage,
    InvalidInput,
    OutputImage,
    Provider,
    ProviderRequest,
    ProviderUnavailable,
    StagedOutput,
)
from darkroom.providers.local import LocalProvider
from tests.fixtures.photos import encode, photo_bytes, scene


class Progress:
    def __init__(self) -> None:
        self.values: list[float] = []

    async def __call__(self, value: float) -> None:
        self.values.append(value)


def request(task_type: str, *images: bytes, **params: object) -> ProviderRequest:
    inputs = [InputImage(data=d, content_type="image/jpeg", name=f"in{i}.jpg") for i, d in enumerate(images)]
    return ProviderRequest(task_id="t1", task_type=task_type, inputs=inputs, parameters=params)


def test_satisfies_protocol(provider: LocalProvider) -> None:
    checked: Provider = provider
    assert checked.name == "local"
    assert set(checked.capabilities()) == {"background_removal", "style_transfer", "color_enhancement"}


async def test_warm_up(provider: LocalProvider) -> None:
    seconds = await provider.warm_up()
    assert 0 < seconds < 30


async def test_multiple_inputs_give_ordered_outputs(provider: LocalProvider) -> None:
    sizes = [(320, 240), (200, 300), (256, 256)]
    progress = Progress()
    result = await provider.run(
        request("background_removal", *(photo_bytes(w, h, seed=i) for i, (w, h) in enumerate(sizes))),
        progress,
    )
    assert [(o.width, o.height) for o in result.outputs] == sizes
    for out in result.outputs:
        with Image.open(io.BytesIO(out.data)) as img:
            assert img.mode == "RGBA"
            alpha = np.asarray(img.getchannel("A"))
            assert alpha.min() < 10
            assert alpha.max() > 245
    assert result.metadata["model"] == "u2netp"
    assert progress.values[0] == 0
    assert progress.values[-1] == 100
    assert progress.values == sorted(progress.values)


async def test_color_enhancement_outputs_per_input(provider: LocalProvider) -> None:
    result = await provider.run(
        request(
            "color_enhancement",
            photo_bytes(),
            encode(scene(100, 80), "PNG"),
            enhancement="vintage",
            strength=1.0,
        ),
        Progress(),
    )
    assert [o.content_type for o in result.outputs] == ["image/jpeg", "image/png"]
    assert result.metadata["enhancement"] == "vintage"


async def test_style_transfer_progress_and_event_loop_stays_free(provider: LocalProvider) -> None:
    src = scene(2000, 1500)
    data = encode(src)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    progress = Progress()
    started = time.perf_counter()
    try:
        result = await provider.run(request("style_transfer", data, style="teal_textile"), progress)
    finally:
        stop.set()
        await beat
    elapsed = time.perf_counter() - started
    print(f"style 2000x1500: {elapsed:.2f}s, max gap {max(gaps) * 1000:.0f} ms, progress {progress.values}")

    (out,) = result.outputs
    assert (out.width, out.height) == (2000, 1500)
    with Image.open(io.BytesIO(out.data)) as img:
        diff = np.abs(np.asarray(img, dtype=np.float32) - np.asarray(src, dtype=np.float32)).mean()
    assert diff > 15
    assert result.metadata["style"] == "teal_textile"

    assert elapsed > 0.3, "too fast to say anything about the event loop"
    # Not a timing budget: had the model run on the event loop, one gap would span most of the run.
    # With the work in the pool the loop keeps ticking, so the longest gap is a small part of it.
    assert max(gaps) < elapsed / 4, f"event loop blocked for {max(gaps):.3f}s of {elapsed:.3f}s"
    assert len(gaps) >= 10
    assert progress.values[0] == 0
    assert progress.values[-1] == 100
    assert progress.values == sorted(progress.values)
    if elapsed > 0.8:  # ticks every 0.5 s while the input runs
        assert any(0 < v < 100 for v in progress.values)


async def test_style_image_as_second_input(provider: LocalProvider) -> None:
    photo = photo_bytes(300, 200)
    style = encode(scene(160, 160, seed=9).rotate(30), "PNG")
    result = await provider.run(request("style_transfer", photo, style, style="pastel_pop"), Progress())
    (out,) = result.outputs
    assert (out.width, out.height) == (300, 200)
    assert result.metadata["style"] == "image"


async def test_errors_are_provider_errors(provider: LocalProvider) -> None:
    with pytest.raises(InvalidInput):
        await provider.run(request("upscale", photo_bytes()), Progress())
    with pytest.raises(InvalidInput):
        await provider.run(request("style_transfer", photo_bytes(), photo_bytes(), photo_bytes()), Progress())
    with pytest.raises(InvalidInput, match="Input 2"):
        await provider.run(
            request("color_enhancement", photo_bytes(), b"\xff\xd8\xff\x00garbage"), Progress()
        )


async def test_cancellation_stops_waiting_promptly(provider: LocalProvider) -> None:
    big = encode(scene(750, 500).resize((3000, 2000)))
    task = asyncio.create_task(provider.run(request("style_transfer", big, style="rust_oil"), Progress()))
    await asyncio.sleep(0.3)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 0.2
    # the provider still works afterwards (the worker finishes the abandoned item first)
    result = await provider.run(
        request("color_enhancement", photo_bytes(64, 48), enhancement="cool"), Progress()
    )
    assert len(result.outputs) == 1


async def test_outputs_are_written_to_the_output_dir(provider: LocalProvider, tmp_path: Path) -> None:
    """With an output folder the worker writes each result there (the runner then moves it into
    storage) instead of sending its bytes back: the same bytes, in a file of their own."""
    images = [photo_bytes(320, 240, seed=1), photo_bytes(200, 300, seed=2)]
    plain = await provider.run(request("background_removal", *images), Progress())
    staged_dir = tmp_path / "staging"  # created by the first write
    staged = await provider.run(
        dataclasses.replace(request("background_removal", *images), output_dir=staged_dir), Progress()
    )
    assert all(isinstance(o, OutputImage) for o in plain.outputs)
    files = []
    for bytes_out, file_out in zip(plain.outputs, staged.outputs, strict=True):
        assert isinstance(bytes_out, OutputImage) and isinstance(file_out, StagedOutput)
        assert file_out.path.parent == staged_dir
        assert file_out.path.read_bytes() == bytes_out.data
        assert (file_out.content_type, file_out.width, file_out.height, file_out.size) == (
            bytes_out.content_type,
            bytes_out.width,
            bytes_out.height,
            len(bytes_out.data),
        )
        files.append(file_out.path)
    assert sorted(staged_dir.iterdir()) == sorted(files)


async def test_an_input_with_a_file_is_read_from_it(provider: LocalProvider, tmp_path: Path) -> None:
    """An input stored on this machine goes to the model process as its path, not its bytes:
    here the bytes given are not even an image, and the file's photo is what gets processed."""
    photo = photo_bytes(200, 150, seed=4)
    (tmp_path / "in.jpg").write_bytes(photo)
    by_path = InputImage(data=b"not sent", content_type="image/jpeg", path=tmp_path / "in.jpg")
    request_with_file = dataclasses.replace(
        request("color_enhancement", photo, enhancement="warm"), inputs=[by_path]
    )
    from_file = await provider.run(request_with_file, Progress())
    from_bytes = await provider.run(request("color_enhancement", photo, enhancement="warm"), Progress())
    [a], [b] = from_file.outputs, from_bytes.outputs
    assert isinstance(a, OutputImage) and isinstance(b, OutputImage)
    assert a.data == b.data
    (tmp_path / "in.jpg").unlink()
    with pytest.raises(InvalidInput, match="no longer in storage"):
        await provider.run(request_with_file, Progress())


async def _settled(provider: LocalProvider) -> None:
    """Wait until the pool's one worker has finished whatever it was given before."""
    await provider.run(request("color_enhancement", photo_bytes(16, 16), enhancement="cool"), Progress())


async def test_unused_output_files_are_removed(provider: LocalProvider, tmp_path: Path) -> None:
    """A result nobody will store leaves no file: the other inputs' of a failed input, a run
    cancelled while its input runs (removed when the worker finishes it), and a run whose last
    progress report fails (the lease was lost)."""
    failed = tmp_path / "failed"
    with pytest.raises(InvalidInput, match="Input 2"):
        await provider.run(
            dataclasses.replace(
                request("color_enhancement", photo_bytes(), b"\xff\xd8\xff\x00garbage", photo_bytes()),
                output_dir=failed,
            ),
            Progress(),
        )

    canceled = tmp_path / "canceled"
    big = encode(scene(750, 500).resize((3000, 2000)))
    task = asyncio.create_task(
        provider.run(
            dataclasses.replace(request("style_transfer", big, style="rust_oil"), output_dir=canceled),
            Progress(),
        )
    )
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    lost = tmp_path / "lost"

    async def lose_the_lease(value: float) -> None:
        if value == 100:
            raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        await provider.run(
            dataclasses.replace(request("background_removal", photo_bytes(64, 48)), output_dir=lost),
            lose_the_lease,
        )

    await _settled(provider)
    for folder in (failed, canceled, lost):
        assert not folder.exists() or list(folder.iterdir()) == [], folder


async def test_dead_worker_gives_provider_unavailable_then_recovers() -> None:
    local = LocalProvider(max_workers=1, onnx_threads=1)
    try:
        task = asyncio.create_task(
            local.run(request("style_transfer", encode(scene(1600, 1200))), Progress())
        )
        await asyncio.sleep(0.2)
        pool = local._pool
        assert pool is not None
        while not pool._processes:  # the worker is spawned on the first submit
            await asyncio.sleep(0.05)
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(ProviderUnavailable):
            await task
        result = await local.run(
            request("color_enhancement", photo_bytes(64, 48), enhancement="warm"), Progress()
        )
        assert len(result.outputs) == 1
        assert local._pool is not pool
    finally:
        await local.aclose()
    with pytest.raises(ProviderUnavailable):
        await local.run(request("color_enhancement", photo_bytes(64, 48)), Progress())


@pytest.mark.parametrize(
    ("task_type", "images", "model"),
    [
        ("background_removal", 1, "u2netp"),
        ("style_transfer", 1, "multistyle26"),
        ("style_transfer", 2, "arbitrary_image_stylization"),
        ("color_enhancement", 1, None),
    ],
)
async def test_result_names_the_model_used(
    provider: LocalProvider, task_type: str, images: int, model: str | None
) -> None:
    """``ProviderResult.model`` becomes the task's ``aiModel``; colour enhancement uses none."""
    inputs = [photo_bytes(96, 64, seed=i) for i in range(images)]
    result = await provider.run(request(task_type, *inputs), Progress())
    assert result.model == model
    if model is not None:
        assert result.metadata["model"] == model
