"""Fixtures for the web edge's tests."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

DEFAULTS = Path(__file__).resolve().parents[2] / "shared" / "presets" / "defaults"


@pytest.fixture
def preset_yaml() -> Callable[..., io.BytesIO]:
    """Return a factory of preset YAML uploads (the PET/CT default, optionally edited)."""

    def make(replace: tuple[str, str] | None = None) -> io.BytesIO:
        text = (DEFAULTS / "PETCT_all.yaml").read_text()
        if replace:
            text = text.replace(*replace)
        return io.BytesIO(text.encode())

    return make
