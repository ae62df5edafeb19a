"""OpenCV resampling of the local operations' big images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from darkroom.providers.local import resample
from tests.fixtures.photos import scene


@pytest.mark.parametrize("shape", [(61, 97), (61, 97, 1), (61, 97, 3), (61, 97, 4)])
@pytest.mark.parametrize("size", [(320, 320), (40, 25), (97, 61), (400, 300), (50, 200)])
def test_output_size_and_channels(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = resample.resize(pixels, size)
    assert out.dtype == np.uint8
    assert out.shape == (size[1], size[0], *shape[2:])


def test_same_size_is_the_same_array() -> None:
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    assert resample.resize(pixels, (20, 10)) is pixels


@pytest.mark.parametrize("size", [(10, 8), (333, 250), (9, 700)])
@pytest.mark.parametrize("smooth_up", [True, False])
def test_a_flat_image_stays_flat(size: tuple[int, int], smooth_up: bool) -> None:
    pixels = np.full((120, 160, 3), (12, 200, 77), dtype=np.uint8)
    out = resample.resize(pixels, size, smooth_up=smooth_up)
    assert (out == np.array([12, 200, 77], dtype=np.uint8)).all()


def test_shrinking_by_an_integer_factor_averages_blocks() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (40, 60), dtype=np.uint8)
    out = resample.resize(pixels, (15, 10))
    blocks = pixels.reshape(10, 4, 15, 4).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out.astype(np.float64) - blocks).max() <= 0.5 + 1e-9  # rounded block means


def test_close_to_pillow_lanczos_both_ways() -> None:
    photo = scene(1200, 900)
    pixels = np.asarray(photo)
    down = resample.resize(pixels, (400, 300))
    ref_down = np.asarray(photo.resize((400, 300), Image.Resampling.LANCZOS), dtype=np.float32)
    assert np.abs(down.astype(np.float32) - ref_down).mean() < 3
    up = resample.resize(down, (1200, 900))
    ref_up = np.asarray(Image.fromarray(down).resize((1200, 900), Image.Resampling.LANCZOS), dtype=np.float32)
    assert np.abs(up.astype(np.float32) - ref_up).mean() < 2


@pytest.mark.parametrize(
    ("pixels", "size"),
    [
        (np.zeros((4, 4, 3), dtype=np.uint8), (0, 4)),
        (np.zeros((4, 4, 3), dtype=np.float32), (2, 2)),
        (np.zeros((4,), dtype=np.uint8), (2, 2)),
    ],
)
def test_bad_arguments(pixels: np.ndarray, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"positive|uint8 array"):
        resample.resize(pixels, size)
