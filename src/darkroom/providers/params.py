"""Validate task parameters against a :class:`TaskTypeSpec`.

The API layer calls :func:`validate_parameters` before a task is queued and maps
:class:`InvalidParameter` to HTTP 422. Providers then receive only validated, defaulted values.

Rules (JSON types only, no string coercion):

* ``string``: ``str``.
* ``boolean``: ``bool`` (``"true"``/``1`` are rejected).
* ``number``: ``int`` or ``float`` (not ``bool``), finite; returned as ``float``.
* ``integer``: ``int`` (not ``bool``) or an integral ``float`` such as ``3.0``; returned as ``int``.
* ``allowed``, ``minimum`` and ``maximum`` (inclusive) are enforced.
* Unknown names are rejected. Missing names, and explicit ``null``, take the default (or are
  refused when the parameter is ``required``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from darkroom.providers.base import ParameterSpec, TaskTypeSpec


class InvalidParameter(ValueError):
    """A task parameter is unknown, of the wrong type, or out of range."""

    def __init__(
        self, message: str, *, parameter: str | None = None, code: str = "invalid_parameter"
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.parameter = parameter

    def __str__(self) -> str:
        return self.message


def _coerce(name: str, spec: ParameterSpec, value: Any) -> Any:
    kind = spec.type
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidParameter(f"Parameter '{name}' must be a string.", parameter=name)
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidParameter(f"Parameter '{name}' must be true or false.", parameter=name)
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParameter(f"Parameter '{name}' must be a number.", parameter=name)
        if not math.isfinite(value):
            raise InvalidParameter(f"Parameter '{name}' must be a finite number.", parameter=name)
        return float(value)
    if kind == "integer":
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameter(f"Parameter '{name}' must be an integer.", parameter=name)
        return value
    raise InvalidParameter(f"Parameter '{name}' has an unsupported type '{kind}'.", parameter=name)


def _check_range(name: str, spec: ParameterSpec, value: Any) -> None:
    if spec.type == "string" and spec.required and not value.strip():
        raise InvalidParameter(f"Parameter '{name}' cannot be empty.", parameter=name)
    if spec.type == "string" and spec.max_length is not None and len(value) > spec.max_length:
        raise InvalidParameter(
            f"Parameter '{name}' is longer than {spec.max_length} characters.", parameter=name
        )
    if spec.allowed is not None and value not in spec.allowed:
        choices = ", ".join(str(v) for v in spec.allowed)
        raise InvalidParameter(f"Parameter '{name}' must be one of: {choices}.", parameter=name)
    if spec.type in ("number", "integer"):
        if spec.minimum is not None and value < spec.minimum:
            raise InvalidParameter(f"Parameter '{name}' must be at least {spec.minimum:g}.", parameter=name)
        if spec.maximum is not None and value > spec.maximum:
            raise InvalidParameter(f"Parameter '{name}' must be at most {spec.maximum:g}.", parameter=name)


def validate_parameters(spec: TaskTypeSpec, raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the parameters with defaults applied and values coerced; raise InvalidParameter."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidParameter("Parameters must be a JSON object.")
    for key in raw:
        if not isinstance(key, str) or key not in spec.parameters:
            known = ", ".join(sorted(spec.parameters)) or "none"
            raise InvalidParameter(
                f"Unknown parameter '{key}' for {spec.task_type} (known: {known}).", parameter=str(key)
            )
    result: dict[str, Any] = {}
    for name, pspec in spec.parameters.items():
        value = raw.get(name)
        if value is None and pspec.required:
            raise InvalidParameter(f"Parameter '{name}' is required for {spec.task_type}.", parameter=name)
        if value is None:
            result[name] = pspec.default
            continue
        value = _coerce(name, pspec, value)
        _check_range(name, pspec, value)
        result[name] = value
    return result
