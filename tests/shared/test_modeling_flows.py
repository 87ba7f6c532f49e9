"""shared/modeling/flows.py: the engine's result becomes the model row's columns as JSON values."""

from __future__ import annotations

import json
import math

import numpy as np

from shared.modeling import flows, interface
from shared.modeling.runs import RunJob


def _job(**parameters) -> RunJob:
    """A claimed run's plain inputs."""
    return RunJob(
        run_id=1,
        training_id="train_1_None_1",
        user_id="user-bob",
        album_id="album-x",
        album_name="Survival study",
        extraction_id=1,
        collection_id=None,
        label_category_id=1,
        label_type="Classification",
        parameters={
            "kind": "classification",
            "data_splitting_type": "traintest",
            "train_test_split_type": "automatic",
            "training_patients": ["P1", "P2"],
            "test_patients": ["P3"],
            **parameters,
        },
        total_steps=16,
        published_steps=0,
        attempt=1,
    )


def _result() -> interface.TrainingResult:
    """An engine result with numpy values and undefined metrics."""
    return interface.TrainingResult(
        pipeline=object(),
        best_algorithm="SVC",
        best_data_normalization="StandardScaler",
        hyperparameters={"C": np.float64(0.1), "class_weight": None},
        feature_names=["a"],
        input_columns=["a"],
        training_validation="Nested CV",
        test_validation="bootstrap",
        training_metrics={"auc": {"mean": np.float64(math.nan), "order": 0}},
        cv_scores={"auc": [0.5, math.inf]},
        cv_signature={"folds": "f"},
        selection_cv_metrics={"auc": {"mean": 0.7}},
        test_predictions={"P3": {"prediction": np.int64(1)}},
        test_bootstrap_values={"auc": np.array([0.5, np.nan])},
        dropped_patients=["P9"],
    )


def test_model_fields_are_json_values_with_undefined_numbers_as_text():
    fields = flows.model_fields(_job(left_out_patients=["P4"]), _result())
    json.dumps(fields, allow_nan=False)  # MySQL JSON has no NaN
    assert fields["kind"] == "classification"
    assert fields["name"].startswith("Survival study_model_Classification_")
    assert fields["training_metrics"] == {"auc": {"mean": "N/A", "order": 0}}
    assert fields["cv_scores"] == {"auc": [0.5, "N/A"]}
    assert fields["test_bootstrap_values"] == {"auc": [0.5, "N/A"]}
    assert fields["test_predictions"] == {"P3": {"prediction": 1}}
    assert type(fields["hyperparameters"]["C"]) is float
    assert fields["test_metrics"] is None and fields["evaluation"] == {}
    assert fields["left_out_patients"] == ["P4"] and fields["dropped_patients"] == ["P9"]
    assert fields["test_patient_ids"] == ["P3"] and fields["positive_class"] is None


def test_missing_columns_are_named_then_counted():
    missing = interface.missing_columns(list("abcdefgh"), {"b", "d"})
    assert missing == ["a", "c", "e", "f", "g", "h"]
    assert interface.missing_text("Extraction 7", missing) == (
        "Extraction 7 lacks features the model needs: a, c, e, f, g and 1 more"
    )
