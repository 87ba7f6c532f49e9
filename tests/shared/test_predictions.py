"""The rules of a prediction job (shared/modeling/predictions.py): which labels validate it,
the patients the model was trained on left out of its metrics, and the stored result's shape.
"""

from __future__ import annotations

import numpy as np

from shared import lifecycle
from shared.labels import service as label_service
from shared.modeling import predictions
from tests.support.factories import make_extraction, make_outcome
from tests.webapp.test_models_api import FEATURE, PATIENTS, classification_model


def started(db, model, extraction) -> predictions.PredictionJob:
    """Create and claim a prediction of a model on an extraction."""
    row = predictions.start(
        db, user_id=model.user_id, model_id=model.id, extraction_id=extraction.id
    )
    kind = predictions.PREDICTION
    claimed = lifecycle.claim(db, kind, row_id=row.id, celery_id=kind.task_id(row), worker="w@h")
    assert claimed is row and row.phase == "loading"
    return predictions.prediction_job(db, row)


def test_on_the_models_own_album_its_training_patients_are_left_out_of_the_metrics(db):
    extraction = make_extraction(db, "user-bob", "album-x", PATIENTS)
    category = make_outcome(db, "user-bob", "album-x", {p: "yes" for p in PATIENTS})
    model = classification_model(
        db, extraction, category, test_patients=PATIENTS[8:], input_columns=[FEATURE]
    )
    model.training_patient_ids = PATIENTS[:8]
    label_service.select_current(
        db, user_id="user-bob", album_id="album-x", category_id=category.id
    )
    prepared = predictions.inputs(db, started(db, model, extraction))
    assert sorted(prepared.excluded) == PATIENTS[:8]
    assert set(prepared.excluded.values()) == {"used to train this model"}
    assert list(prepared.outcome.index) == PATIENTS[8:]
    assert prepared.label_category_id == category.id
    assert list(prepared.features.columns) == model.input_columns


def test_another_album_is_validated_on_all_its_labelled_patients(db):
    extraction = make_extraction(db, "user-bob", "album-x", PATIENTS)
    category = make_outcome(db, "user-bob", "album-x", {p: "yes" for p in PATIENTS})
    model = classification_model(
        db, extraction, category, test_patients=PATIENTS[8:], input_columns=[FEATURE]
    )
    model.training_patient_ids = PATIENTS  # same ids in another album: other patients
    other = make_extraction(db, "user-bob", "album-y", PATIENTS)
    labels = make_outcome(db, "user-bob", "album-y", {p: "no" for p in PATIENTS[:5]})
    label_service.select_current(db, user_id="user-bob", album_id="album-y", category_id=labels.id)
    prepared = predictions.inputs(db, started(db, model, other))
    assert prepared.excluded == {}
    assert list(prepared.outcome.index) == PATIENTS[:5]
    assert prepared.validation == "External validation against the outcome 'Response'"


def test_no_validation_without_a_current_outcome_of_the_models_kind(db):
    extraction = make_extraction(db, "user-bob", "album-x", PATIENTS)
    category = make_outcome(db, "user-bob", "album-x", {p: "yes" for p in PATIENTS})
    model = classification_model(
        db, extraction, category, test_patients=PATIENTS[8:], input_columns=[FEATURE]
    )
    job = started(db, model, extraction)
    prepared = predictions.inputs(db, job)
    assert prepared.outcome is None
    assert prepared.validation == "No validation: the album has no current outcome"
    survival = make_outcome(
        db,
        "user-bob",
        "album-x",
        {p: {"Time": "12", "Event": "1"} for p in PATIENTS},
        "OS",
        label_type="Survival",
    )
    label_service.select_current(
        db, user_id="user-bob", album_id="album-x", category_id=survival.id
    )
    prepared = predictions.inputs(db, job)
    assert prepared.outcome is None
    assert prepared.validation == (
        "No validation: the album's current outcome 'OS' is survival, the model is classification"
    )


def test_the_result_is_stored_as_json_with_its_validation_sentence(db):
    extraction = make_extraction(db, "user-bob", "album-x", PATIENTS)
    category = make_outcome(db, "user-bob", "album-x", {p: "yes" for p in PATIENTS})
    model = classification_model(
        db, extraction, category, test_patients=PATIENTS[8:], input_columns=[FEATURE]
    )
    model.training_patient_ids = PATIENTS[:8]
    label_service.select_current(
        db, user_id="user-bob", album_id="album-x", category_id=category.id
    )
    job = started(db, model, extraction)
    prepared = predictions.inputs(db, job)
    outputs = {
        p: {"prediction": np.int64(1), "probabilities": np.array([0.25, 0.75])}
        for p in PATIENTS[2:]
    }
    metrics = {"auc": {"mean": np.float64(0.8), "inf_value": float("nan"), "order": 0}}
    row = predictions.complete(
        db,
        prediction_id=job.prediction_id,
        prepared=prepared,
        predictions=outputs,
        skipped={"P01": "no radiomics feature values", "P02": "no radiomics feature values"},
        metrics=metrics,
    )
    assert row.status == "SUCCESS" and row.finished_at is not None
    assert row.predictions[0] == {
        "patient_id": "P03",
        "prediction": 1,
        "probabilities": [0.25, 0.75],
    }
    assert row.metrics == {"auc": {"mean": 0.8, "inf_value": "N/A", "order": 0}}
    assert row.n_labelled == len(PATIENTS) - 8  # the labelled patients outside training
    assert row.validation == (
        "External validation against the outcome 'Response': 4 labelled patients; "
        "8 patients the model was trained on left out"
    )
    body = predictions.to_read(row).model_dump(mode="json")
    assert body["url"] == f"/predictions/{row.id}" and body["skipped"]["P01"]
    # A late copy of the job finds it ended and changes nothing.
    assert (
        predictions.complete(
            db,
            prediction_id=job.prediction_id,
            prepared=prepared,
            predictions={},
            skipped={},
            metrics=None,
        )
        is None
    )
