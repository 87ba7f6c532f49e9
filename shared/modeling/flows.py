"""Training's domain steps around the pure engine: its input from the rows, its result as a row.

The training worker (workers/training/tasks.py) claims a run, calls `training_data`, trains,
and stores `model_fields(...)` through `runs.complete`; the rules live here, as the extraction
flows live in shared/extractions/. Functions take a session and never commit.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import sqlalchemy.orm as so

from shared.labels.models import LabelCategory
from shared.modeling import dataset
from shared.modeling.interface import TrainingData, TrainingResult
from shared.modeling.plan import TrainingInputError
from shared.modeling.runs import RunJob


def training_data(session: so.Session, job: RunJob) -> TrainingData:
    """Build the engine's input from the stored features, clinical data and labels."""
    params = job.parameters
    training = list(params["training_patients"])
    test = params.get("test_patients")
    patients = [*training, *(test or [])]
    category = session.get(LabelCategory, job.label_category_id)
    if category is None:
        raise TrainingInputError("The outcome was deleted")
    labels = dataset.stored_labels(session, category)
    features, clinical = dataset.feature_table(
        session,
        user_id=job.user_id,
        album_id=job.album_id,
        extraction_id=job.extraction_id,
        patients=patients,
        feature_ids=params.get("feature_ids"),
    )
    labelled = [p for p in patients if p in labels.patients]
    if len(labelled) != len(patients):
        raise TrainingInputError("The outcome's labels changed since the training was requested")
    if features.shape[1] == 0:
        raise TrainingInputError("Neither clinical nor imaging features were selected")
    return TrainingData(
        kind=params["kind"],
        features=features,
        clinical=tuple(clinical),
        outcome=labels.frame(patients),
        positive_class=params.get("positive_class"),
        training_patients=tuple(training),
        test_patients=None if test is None else tuple(test),
    )


def plain(value: Any) -> Any:
    """Turn numpy values into JSON values; NaN and infinities become "N/A" (MySQL JSON has no
    NaN, and the model views write it so)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "N/A"
    return value


# The result's JSON columns, stored under the same names.
JSON_RESULTS = (
    "training_metrics",
    "test_metrics",
    "test_predictions",
    "test_predictions_probabilities",
    "test_bootstrap_values",
    "test_scores_values",
    "test_feature_importance",
    "test_outcomes",
    "hyperparameters",
    "cv_scores",
    "cv_signature",
    "selection_cv_metrics",
    "evaluation",
    "library_versions",
)


def model_fields(job: RunJob, result: TrainingResult) -> dict[str, Any]:
    """Map a training result and its run's parameters to the model row's columns."""
    params = job.parameters
    kind = params["kind"]
    return {
        "name": f"{job.album_name}_model_{kind.capitalize()}_{int(time.time())}",
        "kind": kind,
        "best_algorithm": result.best_algorithm,
        "best_data_normalization": result.best_data_normalization,
        "data_splitting_type": params["data_splitting_type"],
        "train_test_split_type": params["train_test_split_type"],
        "training_validation": result.training_validation,
        "test_validation": result.test_validation,
        "feature_names": list(result.feature_names),
        "input_columns": list(result.input_columns),
        "training_patient_ids": list(params["training_patients"]),
        "test_patient_ids": params.get("test_patients"),
        **{name: plain(getattr(result, name)) for name in JSON_RESULTS},
        "dropped_patients": list(result.dropped_patients),
        "left_out_patients": list(params.get("left_out_patients") or []),
        "positive_class": params.get("positive_class"),
    }
