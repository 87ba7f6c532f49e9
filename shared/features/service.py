"""Feature read rules: the frontend's feature-details parts and the ZIP download."""

from __future__ import annotations

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


def feature_details(session: so.Session, *, extraction: FeatureExtraction) -> tuple[bytes, str]:
    """Build the multipart body (tabular + chart CSVs) and its content type (contract §3.1)."""
    matrix = storage.load_feature_matrix(session, extraction_id=extraction.id)
    outcome = current_outcome(session, user_id=extraction.user_id, album_id=extraction.album_id)
    return table.feature_details_multipart(
        table.tabular_csv(matrix), table.chart_csv(matrix, outcome=outcome)
    )


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
