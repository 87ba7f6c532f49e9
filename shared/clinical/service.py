"""Clinical feature rules: definitions and values per user and album, in files.

The frontend uploads one table at a time without naming a file (its pre-3.3 flow: delete all
definitions, save the new ones, then the values); such requests use the user's default file of
the album. Requests that name a file (3.3 clients) use that file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.clinical.analysis import PATIENT_ID, SKIPPED
from shared.clinical.models import (
    ClinicalFeatureDefinition,
    ClinicalFeatureFile,
    ClinicalFeatureValue,
)
from shared.clinical.schemas import DefinitionEdit, DefinitionSpec
from shared.db import owned
from shared.errors import Conflict, InvalidInput, NotFound

DEFAULT_FILE = "Clinical features"
MISSING = {"", "N/A"}


def resolve_file(
    session: so.Session, *, user_id: str, album_id: str, file_id: int | None
) -> ClinicalFeatureFile:
    """Return the named file (the caller's, of this album) or the default file, created once."""
    if file_id is not None:
        found = owned.get_owned(
            session,
            ClinicalFeatureFile,
            file_id,
            user_id=user_id,
            missing="Clinical file not found",
        )
        if found.album_id != album_id:
            raise NotFound("Clinical file not found")
        return found
    query = sa.select(ClinicalFeatureFile).where(
        ClinicalFeatureFile.user_id == user_id,
        ClinicalFeatureFile.album_id == album_id,
        ClinicalFeatureFile.name == DEFAULT_FILE,
    )
    default = session.scalar(query)
    if default is None:
        default = ClinicalFeatureFile(user_id=user_id, album_id=album_id, name=DEFAULT_FILE)
        session.add(default)
        session.flush()
    return default


def list_definitions(
    session: so.Session, *, user_id: str, album_id: str
) -> list[ClinicalFeatureDefinition]:
    """Return the user's definitions of an album, oldest first."""
    query = (
        sa.select(ClinicalFeatureDefinition)
        .where(
            ClinicalFeatureDefinition.user_id == user_id,
            ClinicalFeatureDefinition.album_id == album_id,
        )
        .order_by(ClinicalFeatureDefinition.id)
    )
    return list(session.scalars(query))


def save_definitions(
    session: so.Session, *, file: ClinicalFeatureFile, specs: Mapping[str, DefinitionSpec]
) -> list[ClinicalFeatureDefinition]:
    """Create or update the file's definitions by name; return those of the request."""
    existing = {d.name: d for d in _file_definitions(session, file.id)}
    saved = []
    for name, spec in specs.items():
        definition = existing.get(name) or ClinicalFeatureDefinition(
            user_id=file.user_id,
            album_id=file.album_id,
            clinical_feature_file_id=file.id,
            name=name,
        )
        _apply(definition, spec)
        session.add(definition)
        saved.append(definition)
    session.flush()
    return saved


def update_definitions(
    session: so.Session, *, user_id: str, album_id: str, edits: Sequence[DefinitionEdit]
) -> list[ClinicalFeatureDefinition]:
    """Apply edited definitions, found by id or else by name among the album's."""
    by_name = {d.name: d for d in list_definitions(session, user_id=user_id, album_id=album_id)}
    targets = [(_edited(session, edit, by_name, user_id), edit) for edit in edits]
    _ensure_names_free(session, [(definition, edit.name) for definition, edit in targets])
    for definition, edit in targets:
        definition.name = edit.name
        _apply(definition, edit)
    session.flush()
    return [definition for definition, _ in targets]


def _edited(
    session: so.Session,
    edit: DefinitionEdit,
    by_name: Mapping[str, ClinicalFeatureDefinition],
    user_id: str,
) -> ClinicalFeatureDefinition:
    """Find the definition an edit targets: the caller's by id, else the album's by name."""
    if edit.id is not None:
        return owned.get_owned(
            session,
            ClinicalFeatureDefinition,
            edit.id,
            user_id=user_id,
            missing=f"Clinical feature definition {edit.id} not found",
        )
    if edit.name in by_name:
        return by_name[edit.name]
    raise NotFound(f"Clinical feature definition {edit.name!r} not found")


def _ensure_names_free(
    session: so.Session, renames: Sequence[tuple[ClinicalFeatureDefinition, str]]
) -> None:
    """Refuse a new name that another definition of the same file holds now, or that two edits
    claim: checked before writing, so the unique (file, name) key never has to refuse it."""
    claimed: dict[tuple[int, str], int] = {}
    for definition, name in renames:
        key = (definition.clinical_feature_file_id, name)
        if claimed.setdefault(key, definition.id) != definition.id:
            raise Conflict(f"Two edits give the name {name!r} to definitions of one clinical file")
        if name == definition.name:
            continue
        # SQL, not Python, compares the names: the column's collation decides what clashes.
        holder = session.scalar(
            sa.select(ClinicalFeatureDefinition.id).where(
                ClinicalFeatureDefinition.clinical_feature_file_id == key[0],
                ClinicalFeatureDefinition.name == name,
                ClinicalFeatureDefinition.id != definition.id,
            )
        )
        if holder is not None:
            raise Conflict(
                f"Clinical feature definition {name!r} already exists in this clinical file"
                f" (definition {holder}); rename that one first",
                details=[{"key": "name", "message": f"{name!r} is taken"}],
            )


def delete_definitions(session: so.Session, *, user_id: str, album_id: str) -> int:
    """Delete every definition of the user's album (their values go with them)."""
    definitions = list_definitions(session, user_id=user_id, album_id=album_id)
    for definition in definitions:
        session.delete(definition)
    session.flush()
    return len(definitions)


def save_values(
    session: so.Session, *, file: ClinicalFeatureFile, table: Mapping[str, Mapping[str, Any]]
) -> list[ClinicalFeatureValue]:
    """Replace the file's values of the defined columns present in the table."""
    definitions = {d.name: d for d in _file_definitions(session, file.id)}
    present = {name for row in table.values() for name in row} - {PATIENT_ID, SKIPPED}
    used = [definitions[name] for name in sorted(present & definitions.keys())]
    if not used:
        raise InvalidInput(
            "None of the table's columns has a clinical feature definition; save the definitions"
            " first"
        )
    session.execute(
        sa.delete(ClinicalFeatureValue).where(
            ClinicalFeatureValue.clinical_feature_definition_id.in_([d.id for d in used])
        )
    )
    rows = [
        ClinicalFeatureValue(
            clinical_feature_definition_id=definition.id,
            patient_id=patient,
            value=_stored(cells.get(definition.name)),
        )
        for patient, cells in table.items()
        for definition in used
    ]
    session.add_all(rows)
    session.flush()
    return rows


def read_values(
    session: so.Session, *, user_id: str, album_id: str, patient_ids: Sequence[str]
) -> dict[str, dict[str, str | None]]:
    """Return {patient: {column: value}}; a name defined in several files is `<file>::<name>`."""
    definitions = list_definitions(session, user_id=user_id, album_id=album_id)
    counts = Counter(d.name for d in definitions)
    keys = {
        d.id: d.name if counts[d.name] == 1 else f"{d.clinical_feature_file_id}::{d.name}"
        for d in definitions
    }
    if not keys or not patient_ids:
        return {}
    query = sa.select(ClinicalFeatureValue).where(
        ClinicalFeatureValue.clinical_feature_definition_id.in_(keys),
        ClinicalFeatureValue.patient_id.in_(set(patient_ids)),
    )
    result: dict[str, dict[str, str | None]] = {}
    for value in session.scalars(query.order_by(ClinicalFeatureValue.id)):
        result.setdefault(value.patient_id, {})[keys[value.clinical_feature_definition_id]] = (
            value.value
        )
    return result


def _file_definitions(session: so.Session, file_id: int) -> list[ClinicalFeatureDefinition]:
    """Return a file's definitions."""
    query = sa.select(ClinicalFeatureDefinition).where(
        ClinicalFeatureDefinition.clinical_feature_file_id == file_id
    )
    return list(session.scalars(query))


def _apply(definition: ClinicalFeatureDefinition, spec: DefinitionSpec) -> None:
    """Copy a spec's type, encoding and missing-value policy."""
    definition.feat_type = spec.feat_type
    definition.encoding = spec.encoding
    definition.missing_values = spec.missing_values


def _stored(cell: Any) -> str | None:
    """Store cells as text; "" and "N/A" are missing."""
    if cell is None:
        return None
    text = str(cell).strip()
    return None if text in MISSING else text
