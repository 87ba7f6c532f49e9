"""Wire shapes of feature presets (contract §6.2)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field

from shared.errors import InvalidInput
from shared.presets.config_schema import parse_stored_yaml
from shared.presets.models import FeaturePreset
from shared.schemas import Name, ReadSchema, TimestampedRead

log = logging.getLogger(__name__)
PRESETS_FOLDER = "feature-presets"


def _stored_config(row: FeaturePreset) -> dict[str, Any]:
    """Parse a stored preset; a row saved before the plain-YAML rules reads as `{}` (with its
    raw text), so it cannot break the list and an admin can still see and delete it."""
    try:
        return parse_stored_yaml(row.config_yaml)
    except InvalidInput:
        log.warning("feature preset %s holds YAML that is no longer accepted", row.id)
        return {}


class PresetRead(TimestampedRead):
    """A preset with its parsed config and its raw YAML text."""

    name: str
    config_path: str
    config: dict[str, Any]
    config_raw: str = Field(alias="config-raw")

    @classmethod
    def from_row(cls, row: FeaturePreset) -> PresetRead:
        """Build the wire shape from a row (the path is a label, never a file to open)."""
        return cls(
            id=row.id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            name=row.name,
            config_path=f"{PRESETS_FOLDER}/{row.file_name}",
            config=_stored_config(row),
            config_raw=row.config_yaml,
        )


class PresetForm(ReadSchema):
    """The multipart text fields of P3/P4 (the YAML comes as the `file` part)."""

    name: Name


class PresetDeleted(ReadSchema):
    """Answer of a preset deletion."""

    deleted: bool = True
    id: int
