from __future__ import annotations

import re
from typing import Any

import pytest

from darkroom.providers.base import ParameterSpec, TaskTypeSpec
from darkroom.providers.local import CAPABILITIES, STYLE_INDEX, STYLE_NAMES
from darkroom.providers.params import InvalidParameter, validate_parameters

STYLE = CAPABILITIES["style_transfer"]
ENHANCE = CAPABILITIES["color_enhancement"]
BG = CAPABILITIES["background_removal"]


def test_capabilities_shape() -> None:
    assert set(CAPABILITIES) == {"background_removal", "style_transfer", "color_enhancement"}
    assert (STYLE.min_inputs, STYLE.max_inputs) == (1, 2)
    assert (BG.min_inputs, BG.max_inputs) == (1, 5)
    assert (ENHANCE.min_inputs, ENHANCE.max_inputs) == (1, 5)
    for spec in CAPABILITIES.values():
        assert spec.description
        for name, param in spec.parameters.items():
            assert param.description, name
            if param.allowed is not None:
                assert param.default in param.allowed


def test_26_unique_snake_case_style_names() -> None:
    assert len(STYLE_NAMES) == 26
    assert sorted(STYLE_INDEX.values()) == list(range(26))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", name) for name in STYLE_NAMES)
    assert tuple(STYLE.parameters["style"].allowed or ()) == STYLE_NAMES


def test_defaults_applied() -> None:
    assert validate_parameters(STYLE, {}) == {
        "style": "blue_impasto",
        "strength": 1.0,
        "preserve_color": False,
    }
    assert validate_parameters(ENHANCE, None) == {"enhancement": "auto", "strength": 1.0}
    assert validate_parameters(BG, {"post_process": None}) == {
        "background": "transparent",
        "post_process": False,
    }


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_every_style_name_accepted(style: str) -> None:
    assert validate_parameters(STYLE, {"style": style})["style"] == style


@pytest.mark.parametrize(
    ("spec", "raw", "bad"),
    [
        (STYLE, {"style": "picasso"}, "style"),
        (STYLE, {"style": "Blue_Impasto"}, "style"),
        (STYLE, {"style": 3}, "style"),
        (STYLE, {"strength": 1.5}, "strength"),
        (STYLE, {"strength": -0.1}, "strength"),
        (STYLE, {"strength": "0.5"}, "strength"),
        (STYLE, {"strength": True}, "strength"),
        (STYLE, {"strength": float("nan")}, "strength"),
        (STYLE, {"preserve_color": "true"}, "preserve_color"),
        (STYLE, {"preserve_color": 1}, "preserve_color"),
        (STYLE, {"colour": "red"}, "colour"),
        (ENHANCE, {"enhancement": "sepia"}, "enhancement"),
        (BG, {"background": "green"}, "background"),
    ],
)
def test_invalid_parameters(spec: TaskTypeSpec, raw: dict[str, Any], bad: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        validate_parameters(spec, raw)
    assert err.value.code == "invalid_parameter"
    assert err.value.parameter == bad
    assert bad in err.value.message


def test_number_coercion() -> None:
    assert validate_parameters(ENHANCE, {"strength": 0})["strength"] == 0.0
    assert isinstance(validate_parameters(ENHANCE, {"strength": 1})["strength"], float)


INT_SPEC = TaskTypeSpec(
    task_type="demo",
    parameters={"count": ParameterSpec(type="integer", default=2, minimum=1, maximum=4)},
)


@pytest.mark.parametrize(("raw", "expected"), [(3, 3), (3.0, 3), (None, 2)])
def test_integer_accepts_integral_floats(raw: Any, expected: int) -> None:
    assert validate_parameters(INT_SPEC, {"count": raw}) == {"count": expected}


@pytest.mark.parametrize("raw", [2.5, "3", True, 0, 5, float("inf")])
def test_integer_rejects(raw: Any) -> None:
    with pytest.raises(InvalidParameter):
        validate_parameters(INT_SPEC, {"count": raw})


def test_non_mapping_rejected() -> None:
    with pytest.raises(InvalidParameter):
        validate_parameters(STYLE, ["style"])  # type: ignore[arg-type]
