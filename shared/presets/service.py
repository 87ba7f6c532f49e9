"""Feature preset rules: validated YAML, unique names, seeding of the four defaults."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.errors import Conflict, InvalidInput, NotFound
from shared.presets.config_schema import canonical_yaml
from shared.presets.models import FeaturePreset

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
DEFAULT_PRESETS = {
    "PET/CT": "PETCT_all.yaml",
    "MRI": "MRI.yaml",
    "MRI/CT": "MRI_CT.yaml",
    "MRI/PET": "MRI_PET.yaml",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(raw: str | None, fallback: str) -> str:
    """Reduce a client-supplied file name to a plain base name (it is only a label)."""
    base = Path((raw or "").replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip("._")
    return (cleaned or fallback)[:255]


def check_yaml(text: str) -> str:
    """Return the canonical text of a valid extraction configuration; raise InvalidInput else."""
    return canonical_yaml(text)


def list_presets(session: so.Session) -> list[FeaturePreset]:
    """Return every preset, by name."""
    return list(session.scalars(sa.select(FeaturePreset).order_by(FeaturePreset.name)))


def get_preset(session: so.Session, *, preset_id: int) -> FeaturePreset:
    """Return a preset or raise NotFound."""
    preset = session.get(FeaturePreset, preset_id)
    if preset is None:
        raise NotFound("Feature preset not found")
    return preset


def _ensure_name_free(session: so.Session, name: str, *, except_id: int | None = None) -> None:
    """Raise Conflict when another preset already uses the name."""
    query = sa.select(FeaturePreset.id).where(FeaturePreset.name == name)
    if except_id is not None:
        query = query.where(FeaturePreset.id != except_id)
    if session.scalar(query) is not None:
        raise Conflict(f"A preset named {name!r} already exists")


def create_preset(
    session: so.Session, *, name: str, file_name: str, yaml_text: str
) -> FeaturePreset:
    """Create a preset from validated YAML."""
    if not name:
        raise InvalidInput("name is required")
    canonical = check_yaml(yaml_text)
    _ensure_name_free(session, name)
    preset = FeaturePreset(name=name, file_name=file_name, config_yaml=canonical)
    session.add(preset)
    session.flush()
    return preset


def update_preset(
    session: so.Session,
    *,
    preset_id: int,
    name: str,
    file_name: str | None = None,
    yaml_text: str | None = None,
) -> FeaturePreset:
    """Rename a preset and, when a new file is given, replace its YAML."""
    preset = get_preset(session, preset_id=preset_id)
    if not name:
        raise InvalidInput("name is required")
    _ensure_name_free(session, name, except_id=preset_id)
    preset.name = name
    if yaml_text is not None:
        preset.config_yaml = check_yaml(yaml_text)
        preset.file_name = file_name or preset.file_name
    session.flush()
    return preset


def delete_preset(session: so.Session, *, preset_id: int) -> None:
    """Delete a preset; extractions made with it keep their own copy of the configuration."""
    session.delete(get_preset(session, preset_id=preset_id))
    session.flush()


def seed_default_presets(session: so.Session, *, refresh: bool = False) -> list[str]:
    """Insert the default presets that are missing (or refresh them); return the names written."""
    written = []
    for name, file_name in DEFAULT_PRESETS.items():
        text = (DEFAULTS_DIR / file_name).read_text()
        existing = session.scalar(sa.select(FeaturePreset).where(FeaturePreset.name == name))
        if existing is None:
            session.add(FeaturePreset(name=name, file_name=file_name, config_yaml=text))
        elif refresh and existing.config_yaml != text:
            existing.config_yaml, existing.file_name = text, file_name
        else:
            continue
        written.append(name)
    session.flush()
    return written
