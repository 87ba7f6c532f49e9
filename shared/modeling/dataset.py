"""Training data from the platform's own rows: labels, radiomics (wide) and clinical columns.

Pure assembly over sessions and pandas; no scikit-learn. The web edge uses the label part to
validate a request (M2); the training worker builds the whole table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.clinical.models import ClinicalFeatureDefinition, ClinicalFeatureValue
from shared.extractions.models import ExtractionTask
from shared.features import storage, table
from shared.labels.models import Label, LabelCategory
from shared.modeling.interface import ClinicalColumn

CLASSIFICATION = "classification"
SURVIVAL = "survival"
# Label texts that mean "no label": the backend's placeholder, empty cells, pandas' NaN text.
MISSING_TEXT = frozenset({"", "undefined", "nan", "n/a", "none", "null"})
TRUE_TEXT = frozenset({"1", "1.0", "true", "yes", "y", "event", "dead", "deceased"})
FALSE_TEXT = frozenset({"0", "0.0", "false", "no", "n", "censored", "alive"})


def kind_of(category: LabelCategory) -> str:
    """Return the engine's kind of an outcome ("classification" | "survival")."""
    return SURVIVAL if category.label_type.lower() == SURVIVAL else CLASSIFICATION


def _text(value: Any) -> str | None:
    """Return a label cell as stripped text; None when it means missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return None if text.lower() in MISSING_TEXT else text


def _event(value: Any) -> bool | None:
    """Parse a survival event flag; None when missing or unreadable."""
    text = _text(value)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in TRUE_TEXT:
        return True
    if lowered in FALSE_TEXT:
        return False
    return None


def _time(value: Any) -> float | None:
    """Parse a survival time; None when missing, unreadable, negative or not finite."""
    text = _text(value)
    try:
        number = float(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) and number >= 0 else None


def class_label(value: Any) -> str | None:
    """Normalise a class label: numbers compare as numbers ("1.0" is "1")."""
    text = _text(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


@dataclass(frozen=True)
class StoredLabels:
    """The usable labels of an outcome, and the patients whose label is missing."""

    kind: str
    classes: dict[str, str] = field(default_factory=dict)  # classification: pid -> label
    survival: dict[str, tuple[float, bool]] = field(default_factory=dict)  # pid -> (time, event)
    missing: frozenset[str] = frozenset()

    @property
    def patients(self) -> set[str]:
        """Return the labelled patients."""
        return set(self.classes) if self.kind == CLASSIFICATION else set(self.survival)

    def outcome_of(self, patients: Sequence[str]) -> list[Any]:
        """Return the plan's training outcome of some labelled patients (in their order)."""
        if self.kind == CLASSIFICATION:
            return [self.classes[p] for p in patients]
        return [self.survival[p] for p in patients]

    def frame(self, patients: Sequence[str]) -> pd.DataFrame:
        """Return the engine's outcome frame of some labelled patients."""
        index = pd.Index(list(patients), name="PatientID")
        if self.kind == CLASSIFICATION:
            return pd.DataFrame({"label": [self.classes[p] for p in patients]}, index=index)
        return pd.DataFrame(
            {
                "time": [float(self.survival[p][0]) for p in patients],
                "event": [bool(self.survival[p][1]) for p in patients],
            },
            index=index,
        )


def stored_labels(session: so.Session, category: LabelCategory) -> StoredLabels:
    """Read an outcome's stored labels; Undefined, empty and unreadable ones are missing."""
    kind = kind_of(category)
    rows = session.execute(
        sa.select(Label.patient_id, Label.label_content).where(
            Label.label_category_id == category.id
        )
    )
    classes: dict[str, str] = {}
    survival: dict[str, tuple[float, bool]] = {}
    missing: set[str] = set()
    for patient, content in rows:
        content = content or {}
        if kind == CLASSIFICATION:
            label = class_label(content.get("Outcome"))
            if label is None:
                missing.add(patient)
            else:
                classes[patient] = label
        else:
            time, event = _time(content.get("Time")), _event(content.get("Event"))
            if time is None or event is None:
                missing.add(patient)
            else:
                survival[patient] = (time, event)
    return StoredLabels(kind, classes, survival, frozenset(missing))


def extracted_patients(session: so.Session, extraction_id: int) -> set[str]:
    """Return the patients of an extraction whose study succeeded."""
    query = sa.select(ExtractionTask.patient_id).where(
        ExtractionTask.feature_extraction_id == extraction_id,
        ExtractionTask.status == "SUCCESS",
        ExtractionTask.patient_id.is_not(None),
    )
    return {p for p in session.scalars(query) if p}


# --- features -----------------------------------------------------------------------------------


def radiomics_frame(
    session: so.Session,
    *,
    extraction_id: int,
    feature_ids: Iterable[str] | None = None,
    patients: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return the radiomics features as one row per patient, columns `<Modality>‑<ROI>‑<name>`.

    With `feature_ids`, only those radiomics IDs (clinical IDs are ignored here); with
    `patients`, rows are those patients in that order (NaN rows for patients without values).
    """
    selected = None
    if feature_ids is not None:
        selected = [fid for fid in feature_ids if table.parse_feature_id(fid) is not None]
        if not selected:
            return pd.DataFrame(index=pd.Index(list(patients or []), name="PatientID"))
    matrix = storage.load_feature_matrix(session, extraction_id=extraction_id, feature_ids=selected)
    rows = sorted(set(matrix.patient_ids)) if patients is None else list(patients)
    ids, wide = table.wide_matrix(matrix, sorted(set(matrix.patient_ids) | set(rows)))
    frame = pd.DataFrame(wide, columns=ids, index=sorted(set(matrix.patient_ids) | set(rows)))
    if selected is not None:
        frame = frame[[fid for fid in ids if fid in set(selected)]]
    frame = frame.reindex(rows)
    frame.index.name = "PatientID"
    return frame


def clinical_definitions(
    session: so.Session, *, user_id: str, album_id: str, feature_ids: Iterable[str] | None = None
) -> list[tuple[str, ClinicalFeatureDefinition]]:
    """Return (column name, definition) of the user's clinical columns of an album.

    A name defined in several files is `<file id>::<name>`, as the values API reads it. With
    `feature_ids` (a collection), only definitions named there (bare or `<file>::<name>`).
    """
    definitions = list(
        session.scalars(
            sa.select(ClinicalFeatureDefinition)
            .where(
                ClinicalFeatureDefinition.user_id == user_id,
                ClinicalFeatureDefinition.album_id == album_id,
            )
            .order_by(ClinicalFeatureDefinition.id)
        )
    )
    counts = Counter(d.name for d in definitions)
    named = [
        (d.name if counts[d.name] == 1 else f"{d.clinical_feature_file_id}::{d.name}", d)
        for d in definitions
    ]
    if feature_ids is None:
        return named
    wanted = set(feature_ids)
    chosen, seen = [], set()
    for column, definition in named:  # oldest first: a bare name means its first file
        full = f"{definition.clinical_feature_file_id}::{definition.name}"
        bare = definition.name in wanted and definition.name not in seen
        if column in wanted or full in wanted or bare:
            chosen.append((column, definition))
        seen.add(definition.name)
    return chosen


def _clinical_cell(feat_type: str, value: str | None) -> Any:
    """Numbers become floats (unreadable ones missing); categories stay text."""
    if value is None:
        return None
    if feat_type == "Number":
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return value


def clinical_frame(
    session: so.Session,
    *,
    user_id: str,
    album_id: str,
    patients: Sequence[str],
    feature_ids: Iterable[str] | None = None,
) -> tuple[pd.DataFrame, list[ClinicalColumn]]:
    """Return the clinical columns of some patients (None = missing) and their policies."""
    named = clinical_definitions(
        session, user_id=user_id, album_id=album_id, feature_ids=feature_ids
    )
    index = pd.Index(list(patients), name="PatientID")
    if not named or not patients:
        return pd.DataFrame(index=index), []
    column_of = {d.id: (column, d.feat_type) for column, d in named}
    values: dict[str, dict[str, Any]] = {column: {} for column, _ in named}
    query = sa.select(
        ClinicalFeatureValue.clinical_feature_definition_id,
        ClinicalFeatureValue.patient_id,
        ClinicalFeatureValue.value,
    ).where(
        ClinicalFeatureValue.clinical_feature_definition_id.in_(list(column_of)),
        ClinicalFeatureValue.patient_id.in_(set(patients)),
    )
    for definition_id, patient, value in session.execute(query):
        column, feat_type = column_of[definition_id]
        values[column][patient] = _clinical_cell(feat_type, value)
    frame = pd.DataFrame(
        {
            column: pd.Series([values[column].get(p) for p in patients], index=index, dtype=object)
            for column, _ in named
        },
        index=index,
    )
    specs = [
        ClinicalColumn(column, d.feat_type, d.encoding, d.missing_values) for column, d in named
    ]
    return frame, specs


def feature_table(
    session: so.Session,
    *,
    user_id: str,
    album_id: str,
    extraction_id: int,
    patients: Sequence[str],
    feature_ids: Iterable[str] | None = None,
) -> tuple[pd.DataFrame, list[ClinicalColumn]]:
    """Return radiomics + clinical columns of some patients, and the clinical policies."""
    ids = None if feature_ids is None else list(feature_ids)
    radiomics = radiomics_frame(
        session, extraction_id=extraction_id, feature_ids=ids, patients=patients
    )
    clinical, specs = clinical_frame(
        session, user_id=user_id, album_id=album_id, patients=patients, feature_ids=ids
    )
    features = pd.concat([radiomics.astype(np.float64), clinical], axis=1)
    features.index = pd.Index([str(p) for p in patients], name="PatientID")
    return features, specs


def available_columns(
    session: so.Session, *, user_id: str, album_id: str, extraction_id: int
) -> set[str]:
    """Return every column an extraction (+ its album's clinical data) can provide."""
    radiomics = storage.feature_ids(session, extraction_id=extraction_id)
    clinical = clinical_definitions(session, user_id=user_id, album_id=album_id)
    return set(radiomics) | {column for column, _ in clinical}
