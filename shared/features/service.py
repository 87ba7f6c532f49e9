"""Feature read rules: the frontend's feature-details parts and the ZIP download."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy.orm as so

from shared.extractions.models import FeatureExtraction
from shared.features import storage, table
from shared.labels import service as label_service


def current_outcome(session: so.Session, *, user_id: str, album_id: str) -> table.Outcome | None:
    """Return the labels of the outcome the user selected for the album, if any."""
    outcome_id = label_service.current_id(session, user_id=user_id, album_id=album_id)
    if outcome_id is None:
        return None
    return storage.load_outcome(session, label_category_id=outcome_id)


@dataclass(frozen=True)
class FeatureDetails:
    """E5's multipart body, its content type, and which patients the ranking used."""

    body: bytes
    content_type: str
    ranking_note: str


def ranking_patients(split: Any, patients: Iterable[str]) -> frozenset[str] | None:
    """Return the patients the ranking may use: a train/test split's training patients only.

    `split` is an extraction or a collection (their `data_splitting_type`, `training_patients`
    and `test_patients`, contract E3/F4). Without a stored train/test split: None (every
    labelled patient). Test patients never count, even when the training list is missing.
    """
    training = set(split.training_patients or [])
    test = set(split.test_patients or [])
    if split.data_splitting_type != "traintest" or not (training or test):
        return None
    return frozenset((training or set(patients)) - test)


def ranking_note(outcome: table.Outcome | None, allowed: frozenset[str] | None, n: int) -> str:
    """Say in words which patients the chart's `Ranking` was computed on."""
    if outcome is None:
        return "not computed (no current outcome for the album)"
    if allowed is None:
        if not n:
            return "not computed (no patient with features has a usable label)"
        return f"computed on all {n} labelled patients (no train/test split)"
    if not n:
        return "not computed (no training patient with features has a usable label)"
    return f"computed on {n} training patients (train/test split)"


def feature_details(session: so.Session, *, extraction: FeatureExtraction) -> FeatureDetails:
    """Build the multipart body (tabular + chart CSVs) and its content type (contract §3.1).

    The ranking sees the training patients of the extraction's split only (issue #15 §2).
    """
    matrix = storage.load_feature_matrix(session, extraction_id=extraction.id)
    outcome = current_outcome(session, user_id=extraction.user_id, album_id=extraction.album_id)
    allowed = ranking_patients(extraction, matrix.patient_ids)
    chart = table.chart(matrix, outcome=outcome, ranking_patients=allowed)
    body, content_type = table.feature_details_multipart(table.tabular_csv(matrix), chart.csv)
    return FeatureDetails(body, content_type, ranking_note(outcome, allowed, chart.ranked_on))


def features_zip(
    session: so.Session,
    *,
    extraction: FeatureExtraction,
    feature_ids: list[str] | None = None,
    collection_name: str | None = None,
) -> tuple[bytes, str]:
    """Build the ZIP of one CSV per (modality, ROI) and its file name (contract §3.2)."""
    matrix = storage.load_feature_matrix(
        session, extraction_id=extraction.id, feature_ids=feature_ids
    )
    album_name = extraction.album_name or extraction.album_id
    return table.features_zip(matrix, album_name, collection_name)
