"""`.env.example` lists every setting, with its real default, and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.config import Settings, load_settings
from tests.helpers.waiting import repo_root


def _leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The settings' defaults, flattened to environment variable names."""
    fields: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name.upper()}"
        if isinstance(value, dict):
            fields.update(_leaves(value, f"{key}__"))
        else:
            fields[key] = value
    return fields


def _example() -> dict[str, str]:
    pairs = {}
    for line in (repo_root() / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def _as_env(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_every_setting_is_listed_with_its_default() -> None:
    defaults = Settings(_env_file=None).model_dump(mode="json")
    expected = {key: _as_env(default) for key, default in _leaves(defaults).items()}

    assert _example() == expected


def test_the_example_copied_to_dotenv_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text((repo_root() / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)

    assert load_settings() == Settings(_env_file=None)
