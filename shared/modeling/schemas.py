"""Wire shape of a trained model (contract §6.6, `format_model`)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from shared.schemas import IsoDatetime, Schema, TimestampedRead


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
    # Beyond the old backend (the frontend ignores them).
    patients_left_out: int = 0
    dropped_patients: list[str] = Field(default_factory=list)
    hyperparameters: dict[str, Any] | None = None
    # `training_metrics` is the nested-CV estimate; this is the final search's best mean
    # (optimistic: the best of the grid), and `evaluation` says how each figure was obtained.
    selection_cv_metrics: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    user_id: str
    album_id: str
    feature_extraction_id: int
    feature_collection_id: int | None
    type: str
    label_category: str
    training_metrics_alias: dict[str, Any] = Field(alias="training-metrics")
    test_metrics_alias: dict[str, Any] | None = Field(alias="test-metrics")


# --- requests ---------------------------------------------------------------------------------


class TrainRequest(Schema):
    """M2 body as the frontend builds it (hyphenated keys); `labels` and `studies` are not used.

    Labels come from the outcome's stored labels, patients from the platform's own rows.
    """

    extraction_id: int = Field(alias="extraction-id")
    collection_id: int | None = Field(None, alias="collection-id")
    label_category_id: int = Field(alias="label-category-id")
    data_splitting_type: Literal["fulldataset", "traintest"] = Field(
        "traintest", alias="data-splitting-type"
    )
    train_test_split_type: Literal["automatic", "manual"] = Field(
        "automatic", alias="train-test-split-type"
    )
    training_patients: list[str] | None = Field(None, alias="training-patients")
    test_patients: list[str] | None = Field(None, alias="test-patients")
    # Accepted in any shape and never used: the platform's own rows are the truth.
    studies: Any = None
    album: Any = None
    labels: Any = None
    modalities: Any = None
    rois: Any = None
    # Not sent by the frontend: restrict the grid to some algorithm keys (tests, benchmarks).
    algorithms: list[str] | None = None


class TrainStarted(BaseModel):
    """M2 answer."""

    training_id: str = Field(alias="training-id")
    n_steps: int = Field(alias="n-steps")


class ModelIds(Schema):
    """`{model_ids}` of M4, M5-M8 (ids may come as strings or one comma-separated string)."""

    model_ids: list[int | str] | str

    def ids(self) -> list[int]:
        """Return the ids as integers."""
        raw = self.model_ids.split(",") if isinstance(self.model_ids, str) else self.model_ids
        try:
            return [int(str(item).strip()) for item in raw if str(item).strip()]
        except ValueError as exc:
            raise ValueError("model_ids must be integers") from exc


class PredictRequest(Schema):
    """Body of POST /models/<id>/predict."""

    extraction_id: int = Field(alias="extraction-id")


# --- responses --------------------------------------------------------------------------------


class ModelComparison(BaseModel):
    """M4 (§6.8): p-values of paired tests; a readable string where no valid test exists.

    `p_values_holm` (beyond the contract): the same matrix with Holm-adjusted p-values over the
    pairs compared in this request.
    """

    model_ids: list[int]
    comparison_matrix: dict[str, dict[str, float | str]]
    p_values: dict[str, dict[str, float | str]]
    p_values_holm: dict[str, dict[str, float | str]]


class PredictionPlot(BaseModel):
    """M5/M6 item (§6.8); survival items add `model_type`."""

    model_config = ConfigDict(extra="allow")

    model_id: int
    model_name: str
    patients: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    data_type: str


class PredictionPlots(RootModel[list[PredictionPlot]]):
    """M5/M6 answer."""


class RocData(BaseModel):
    """M7/M8 item (§6.8), or its placeholder with `error`."""

    model_config = ConfigDict(extra="allow")

    model_id: int
    model_name: str
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]
    auc: float
    n_samples: int


class RocList(RootModel[list[RocData]]):
    """M7/M8 answer."""


class FeatureImportances(BaseModel):
    """M12 answer; `computed_on` says which patients the permutations used (the test set)."""

    feature_importances: list[dict[str, Any]]
    model_id: str
    algorithm: str
    normalization: str | None
    computed_on: str


class TestScores(BaseModel):
    """M13 answer."""

    model_id: str
    algorithm: str
    normalization: str | None
    test_scores: list[dict[str, Any]]


class PatientPrediction(BaseModel):
    """One patient's prediction by a saved model."""

    model_config = ConfigDict(extra="allow")

    patient_id: str


class PredictionRead(TimestampedRead):
    """A prediction job (issue #15 §8): its state, then one output per patient and the metrics
    of an external validation when the extraction's album has labels of the model's kind."""

    user_id: str
    model_id: int
    extraction_id: int
    status: Literal["PENDING", "STARTED", "PROGRESS", "SUCCESS", "FAILURE"]
    phase: str
    error: str | None
    attempts: int
    requeues: int
    started_at: IsoDatetime | None
    finished_at: IsoDatetime | None
    predictions: list[PatientPrediction]
    skipped: dict[str, str]  # patient -> why no prediction
    excluded_from_metrics: dict[str, str]  # labelled patient -> why not in the metrics
    metrics: dict[str, Any] | None
    validation: str | None  # what the metrics are, or why there are none
    n_labelled: int  # patients the metrics were computed on
    label_category_id: int | None  # the outcome those labels came from
    url: str  # where to read this prediction


class PredictionList(RootModel[list[PredictionRead]]):
    """The predictions of a model, newest first."""
