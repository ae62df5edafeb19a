"""Documentation that cannot drift: every setting and every error code is documented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from darkroom.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def _env_names() -> list[str]:
    names = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices)
        names.append(str(alias.choices[0]))
    return names


def test_env_example_documents_every_setting_and_parses(tmp_path: Path) -> None:
    text = (ROOT / ".env.example").read_text()
    for name in _env_names():
        assert re.search(rf"^{name}=", text, re.M), f"{name} missing from .env.example"
    Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in _env_names():
        prefix = name.split("_")[0] + "_*"
        assert f"`{name}`" in readme or f"`{prefix}`" in readme, f"{name} missing from README"


def test_readme_lists_every_error_code() -> None:
    readme = (ROOT / "README.md").read_text()
    codes = set()
    for path in (ROOT / "src" / "darkroom").rglob("*.py"):
        codes |= set(re.findall(r'code="([a-z_]+)"', path.read_text()))
        codes |= set(re.findall(r'TaskFailure\(\s*"([a-z_]+)"', path.read_text()))
    assert codes, "no codes found"
    missing = sorted(c for c in codes if f"`{c}`" not in readme)
    assert not missing, f"error codes missing from README: {missing}"
