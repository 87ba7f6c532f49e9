"""Turn response schemas into JSON-ready data (aliases such as `config-raw` included)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel


def dump(model: BaseModel) -> dict[str, Any]:
    """Serialise one schema instance by alias."""
    return model.model_dump(mode="json", by_alias=True)


def dump_all(models: Iterable[BaseModel]) -> list[dict[str, Any]]:
    """Serialise a sequence of schema instances."""
    return [dump(model) for model in models]
