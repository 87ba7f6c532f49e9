"""Training-run rules of its own: a redelivered run resumes its progress count, and the model is
written with its pipeline in one go. The rules every job shares (attempts, refusals, sweeps,
heartbeat) are tested on training runs in test_lifecycle.py."""

from __future__ import annotations

import pytest

from shared import lifecycle
from shared.modeling import runs
from shared.modeling.models import TrainedModel, TrainingRun
from tests.support.factories import make_extraction, make_outcome
from tests.webapp.test_models_api import PATIENTS


@pytest.fixture
def run(db) -> TrainingRun:
    """A queued run of bob's."""
    extraction = make_extraction(db, "user-bob", "album-r", PATIENTS[:3])
    outcome = make_outcome(db, "user-bob", "album-r", {"P01": "1"})
    row = TrainingRun(
        user_id="user-bob",
        album_id="album-r",
        training_id="train_x_1",
        total_steps=11,
        parameters={"kind": "classification"},
        feature_extraction_id=extraction.id,
        label_category_id=outcome.id,
    )
    db.add(row)
    db.flush()
    return row


def claim(db, run: TrainingRun, celery_id: str) -> runs.RunJob:
    """Claim a run for a message and read its inputs, as the worker does."""
    assert lifecycle.claim(db, runs.TRAINING, row_id=run.id, celery_id=celery_id, worker="w") is run
    return runs.run_job(db, run)


def test_a_redelivered_run_resumes_its_count(db, run):
    first = claim(db, run, "c1")
    assert first.attempt == 1 and first.published_steps == 0 and run.phase == "training"
    assert first.album_name == "My Album"
    for step in (1, 2, 3):
        runs.progress(db, run_id=run.id, phase="training", current=step, total=None)
    runs.progress(db, run_id=run.id, phase="training", current=1, total=None)  # a second attempt
    assert run.current_step == 3 and run.status == "PROGRESS"
    second = claim(db, run, "c1")  # the worker died: the same message, redelivered
    assert second.attempt == 2 and second.published_steps == 3


def test_complete_writes_the_model_and_its_pipeline_once(db, run):
    claim(db, run, "c1")
    fields = {
        "name": "m",
        "kind": "classification",
        "best_algorithm": "SVC",
        "data_splitting_type": "fulldataset",
        "train_test_split_type": "automatic",
        "training_validation": "cv",
        "feature_names": ["a"],
        "training_patient_ids": ["P01"],
        "training_metrics": {},
    }
    assert runs.complete(db, run_id=run.id, fields=fields, artifact=b"pipeline") is run
    model = db.get(TrainedModel, run.model_id)
    assert model is not None and run.status == "SUCCESS" and run.phase == "complete"
    assert model.artifact_size == 8 and model.artifact_path == f"db://model/{model.id}"
    assert runs.complete(db, run_id=run.id, fields=fields, artifact=b"again") is None
    assert lifecycle.fail_by_id(db, runs.TRAINING, row_id=run.id, message="late") is None
