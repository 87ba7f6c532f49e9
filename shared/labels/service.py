"""Outcome rules: categories, their labels and the outcome a user selected per album."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.albums.models import AlbumOutcome
from shared.db import owned
from shared.db.wire import iso_text
from shared.errors import Conflict, InvalidInput
from shared.extractions.models import ExtractionTask, FeatureExtraction
from shared.labels.models import Label, LabelCategory
from shared.labels.schemas import OUTCOME_COLUMNS, LabelValue
from shared.lru import BoundedLru
from shared.schemas import iso_naive

UNDEFINED = "Undefined"


def list_for_album(session: so.Session, *, user_id: str, album_id: str) -> list[LabelCategory]:
    """Return the user's outcomes of an album, oldest first."""
    query = (
        sa.select(LabelCategory)
        .where(LabelCategory.user_id == user_id, LabelCategory.album_id == album_id)
        .order_by(LabelCategory.id)
    )
    return list(session.scalars(query))


# Labels change whenever a user edits an outcome, in any API process, so their cache is
# checked on every read against a fingerprint MariaDB computes per outcome: the row count, the
# highest id and `updated_at` (inserts, deletes, ORM and Core updates) and a XOR of each row's
# CRC32 (an edit whatever its timestamp). A one-row-per-outcome aggregate replaces 300 rows that
# PyMySQL would decode in pure Python.
_LABELS: BoundedLru[tuple[Any, ...], tuple[dict[str, Any], ...]] = BoundedLru(256)


def _label_fingerprints(session: so.Session, category_ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """Return each outcome's label fingerprint (outcomes without labels are absent)."""
    row_text = sa.func.concat_ws(
        "|", Label.id, Label.patient_id, Label.created_at, Label.updated_at, Label.label_content
    )
    rows = session.execute(
        sa.select(
            Label.label_category_id,
            sa.func.count(),
            sa.func.max(Label.id),
            sa.func.max(Label.updated_at),
            sa.func.bit_xor(sa.func.crc32(row_text)),
        )
        .where(Label.label_category_id.in_(category_ids))
        .group_by(Label.label_category_id)
    )
    return {row[0]: tuple(row) for row in rows}


def _read_labels(session: so.Session, category_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Query the labels of these outcomes as wire dicts (timestamps formatted by MariaDB)."""
    labels: dict[int, list[dict[str, Any]]] = {category_id: [] for category_id in category_ids}
    rows = session.execute(
        sa.select(
            Label.id,
            iso_text(Label.created_at).label("created_at"),
            iso_text(Label.updated_at).label("updated_at"),
            Label.patient_id,
            Label.label_content,
            Label.label_category_id,
        )
        .where(Label.label_category_id.in_(category_ids))
        .order_by(Label.id)
    )
    for row in rows:
        labels[row.label_category_id].append(
            {
                "id": row.id,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
                "patient_id": row.patient_id,
                "label_content": row.label_content,
            }
        )
    return labels


def _labels_by_category(
    session: so.Session, category_ids: list[int]
) -> dict[int, list[dict[str, Any]]]:
    """Return each outcome's label dicts, from the process cache when its fingerprint matches."""
    if session.get_bind().dialect.name != "mysql":  # the fingerprint is MariaDB/MySQL SQL
        return _read_labels(session, category_ids)
    fingerprints = _label_fingerprints(session, category_ids)
    found: dict[int, list[dict[str, Any]]] = {c: [] for c in category_ids if c not in fingerprints}
    for category_id, key in fingerprints.items():
        cached = _LABELS.get(key)
        if cached is not None:
            found[category_id] = [dict(label) for label in cached]
    missing = [c for c in category_ids if c not in found]
    if missing:
        fresh = _read_labels(session, missing)
        # Stored under the fingerprint read before the rows: an edit in between makes the
        # next read miss, never serve stale rows.
        for category_id in missing:
            if category_id in fingerprints:
                _LABELS.put(fingerprints[category_id], tuple(fresh[category_id]))
        found.update({c: [dict(label) for label in fresh[c]] for c in missing})
    return found


def read_for_album(session: so.Session, *, user_id: str, album_id: str) -> list[dict[str, Any]]:
    """L1's JSON: the user's outcomes of an album with their labels, from lean queries.

    Each outcome holds a label per patient; loading those as ORM rows and validating each
    through pydantic cost most of the request. The dicts have exactly LabelCategoryRead's
    fields (a test compares the two paths); the labels come from a fingerprinted cache.
    """
    categories = list_for_album(session, user_id=user_id, album_id=album_id)
    if not categories:
        return []
    labels = _labels_by_category(session, [c.id for c in categories])
    return [
        {
            "id": c.id,
            "created_at": iso_naive(c.created_at),
            "updated_at": iso_naive(c.updated_at),
            "album_id": c.album_id,
            "user_id": c.user_id,
            "label_type": c.label_type,
            "name": c.name,
            "labels": labels[c.id],
            "pos_label": c.pos_label,
        }
        for c in categories
    ]


def get_owned(session: so.Session, *, user_id: str, category_id: int) -> LabelCategory:
    """Return the caller's outcome; another user's answers exactly like a missing one."""
    return owned.get_owned(
        session, LabelCategory, category_id, user_id=user_id, missing="Label category not found"
    )


def create(
    session: so.Session, *, user_id: str, album_id: str, label_type: str, name: str
) -> LabelCategory:
    """Create an outcome with an 'Undefined' label per patient of the first extraction."""
    _require_free_name(session, user_id=user_id, album_id=album_id, name=name)
    category = LabelCategory(user_id=user_id, album_id=album_id, label_type=label_type, name=name)
    placeholder = dict.fromkeys(OUTCOME_COLUMNS[label_type], UNDEFINED)
    for patient in _first_extraction_patients(session, user_id=user_id, album_id=album_id):
        category.labels.append(Label(patient_id=patient, label_content=dict(placeholder)))
    session.add(category)
    session.flush()
    return category


def rename(session: so.Session, *, category: LabelCategory, name: str) -> LabelCategory:
    """Rename an outcome (names are unique per user and album)."""
    if name != category.name:
        _require_free_name(session, user_id=category.user_id, album_id=category.album_id, name=name)
        category.name = name
        session.flush()
    return category


def delete(session: so.Session, *, category: LabelCategory) -> None:
    """Delete an outcome and its labels; an album whose current outcome it was has none."""
    session.delete(category)
    session.flush()


def replace_labels(
    session: so.Session,
    *,
    category: LabelCategory,
    label_map: Mapping[str, Mapping[str, LabelValue]],
    pos_label: str | None,
) -> list[Label]:
    """Validate the labels against the outcome type, then replace every stored label."""
    columns = set(OUTCOME_COLUMNS[category.label_type])
    for patient, content in label_map.items():
        if set(content) != columns:
            raise InvalidInput(
                f"Label of patient {patient!r}: a {category.label_type} outcome needs exactly "
                f"{', '.join(sorted(columns))}; got {', '.join(sorted(content)) or 'nothing'}"
            )
    category.labels.clear()
    session.flush()  # the old rows go before the new ones meet the (category, patient) key
    for patient, content in label_map.items():
        category.labels.append(Label(patient_id=patient, label_content=dict(content)))
    if pos_label:
        category.pos_label = pos_label
    session.flush()
    return list(category.labels)


def current_id(session: so.Session, *, user_id: str, album_id: str) -> int | None:
    """Return the id of the outcome the user selected for the album, or None."""
    return session.scalar(
        sa.select(AlbumOutcome.outcome_id).where(
            AlbumOutcome.user_id == user_id, AlbumOutcome.album_id == album_id
        )
    )


def current(session: so.Session, *, user_id: str, album_id: str) -> LabelCategory | None:
    """Return the outcome the user selected for the album, or None."""
    category_id = current_id(session, user_id=user_id, album_id=album_id)
    return None if category_id is None else session.get(LabelCategory, category_id)


def select_current(
    session: so.Session, *, user_id: str, album_id: str, category_id: int | None
) -> AlbumOutcome:
    """Set (or clear, with None) the user's current outcome of an album."""
    if category_id is not None:
        category = get_owned(session, user_id=user_id, category_id=category_id)
        if category.album_id != album_id:
            raise InvalidInput(
                f"Outcome {category_id} belongs to album {category.album_id!r}, not {album_id!r}"
            )
    row = session.scalar(
        sa.select(AlbumOutcome).where(
            AlbumOutcome.user_id == user_id, AlbumOutcome.album_id == album_id
        )
    )
    if row is None:
        row = AlbumOutcome(user_id=user_id, album_id=album_id)
        session.add(row)
    row.outcome_id = category_id
    session.flush()
    return row


def _require_free_name(session: so.Session, *, user_id: str, album_id: str, name: str) -> None:
    """Refuse a second outcome of the same name on one album (409)."""
    taken = session.scalar(
        sa.select(LabelCategory.id).where(
            LabelCategory.user_id == user_id,
            LabelCategory.album_id == album_id,
            LabelCategory.name == name,
        )
    )
    if taken is not None:
        raise Conflict(f"An outcome named {name!r} already exists for this album")


def _first_extraction_patients(session: so.Session, *, user_id: str, album_id: str) -> list[str]:
    """Return the sorted PatientIDs of the user's first extraction of the album."""
    first = (
        sa.select(sa.func.min(FeatureExtraction.id))
        .where(FeatureExtraction.user_id == user_id, FeatureExtraction.album_id == album_id)
        .scalar_subquery()
    )
    query = (
        sa.select(ExtractionTask.patient_id)
        .where(
            ExtractionTask.feature_extraction_id == first,
            ExtractionTask.patient_id.is_not(None),
        )
        .distinct()
        .order_by(ExtractionTask.patient_id)
    )
    return [patient for patient in session.scalars(query) if patient]
