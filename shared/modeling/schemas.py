"""Wire shape of a trained model (contract §6.6, `format_model`)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from shared.schemas import TimestampedRead


def not_a_number_as_text(value: Any) -> Any:
    """Replace NaN and infinities by "N/A" in nested metrics (bare NaN breaks JSON.parse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "N/A"
    if isinstance(value, dict):
        return {key: not_a_number_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [not_a_number_as_text(item) for item in value]
    return value


class ModelRead(TimestampedRead):
    """A trained model as the frontend reads it."""

    name: str
    best_algorithm: str
    data_splitting_type: str
    train_test_split_type: str
    training_validation: str
    test_validation: str | None
    best_data_normalization: str | None
    feature_selection: str | None
    feature_names: list[str]
    training_patient_ids: list[str]
    test_patient_ids: list[str] | None
    model_path: str | None
    training_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    test_predictions: dict[str, Any] | None
    test_predictions_probabilities: dict[str, Any] | None
    train_predictions: None = None  # no longer stored (contract §6.6)
    train_predictions_probabilities: None = None
    test_bootstrap_values: dict[str, Any] | None
    test_scores_values: list[Any] | None
    user_id: str
    album_id: str
    feature_extraction_id: int
    feature_collection_id: int | None
    type: str
    label_category: str
    training_metrics_alias: dict[str, Any] = Field(alias="training-metrics")
    test_metrics_alias: dict[str, Any] | None = Field(alias="test-metrics")
