"""Training-run rules: attempts of a redelivered run, the progress high-water mark, the sweep of
runs a lost worker left running, and the model written with its pipeline in one go."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.db.base import utcnow
from shared.modeling import runs
from shared.modeling.models import TrainingRun
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


def test_a_redelivered_run_resumes_its_count_then_runs_out_of_attempts(db, run):
    first = runs.claim(db, run_id=run.id, celery_id="c1")
    assert isinstance(first, runs.RunJob) and first.attempt == 1 and first.published_steps == 0
    assert first.album_name == "My Album"
    for step in (1, 2, 3):
        runs.progress(db, run_id=run.id, phase="training", current=step, total=None)
    runs.progress(db, run_id=run.id, phase="training", current=1, total=None)  # a second attempt
    assert run.current_step == 3 and run.status == "PROGRESS"
    second = runs.claim(db, run_id=run.id, celery_id="c2")  # the worker died: redelivered
    assert isinstance(second, runs.RunJob) and second.attempt == 2 and second.published_steps == 3
    third = runs.claim(db, run_id=run.id, celery_id="c3")
    assert third is run and run.status == "FAILURE" and "stopped unexpectedly" in run.error
    assert runs.claim(db, run_id=run.id, celery_id="c4") is None  # ended: nothing to do


def test_the_sweep_fails_only_runs_silent_for_longer_than_any_run(db, run):
    runs.claim(db, run_id=run.id, celery_id="c1")
    assert runs.fail_stale(db, older_than=dt.timedelta(hours=1)) == []
    run.updated_at = utcnow() - dt.timedelta(hours=2)  # an explicit value beats onupdate
    db.flush()
    assert [r.id for r in runs.fail_stale(db, older_than=dt.timedelta(hours=1))] == [run.id]
    assert run.status == "FAILURE" and run.error == runs.LOST_MESSAGE


def test_complete_writes_the_model_and_its_pipeline_once(db, run):
    runs.claim(db, run_id=run.id, celery_id="c1")
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
    model = runs.complete(db, run_id=run.id, fields=fields, artifact=b"pipeline")
    assert model is not None and run.model_id == model.id and run.status == "SUCCESS"
    assert model.artifact_size == 8 and model.artifact_path == f"db://model/{model.id}"
    assert runs.complete(db, run_id=run.id, fields=fields, artifact=b"again") is None
    assert runs.fail_by_id(db, run_id=run.id, message="late") is None  # ended runs stay ended


def test_a_restarted_worker_fails_the_runs_it_held(db, run):
    runs.claim(db, run_id=run.id, celery_id="c1", worker="training@host-a")
    assert runs.fail_orphaned(db, worker="training@host-b") == []
    assert [r.id for r in runs.fail_orphaned(db, worker="training@host-a")] == [run.id]
    assert run.status == "FAILURE" and run.error == runs.LOST_MESSAGE


def test_a_run_whose_worker_stopped_its_heartbeat_fails_readably(db, run):
    runs.claim(db, run_id=run.id, celery_id="c1", worker="training@host-b")
    silent = dt.timedelta(seconds=120)
    assert run.heartbeat_at is not None  # the claim is the first sign of life
    assert runs.fail_silent(db, older_than=silent) == []
    run.heartbeat_at = utcnow() - dt.timedelta(seconds=300)  # host B died 5 minutes ago
    db.flush()
    assert runs.beat(db, run_id=run.id)  # a late beat of a live worker: alive again
    db.refresh(run)
    assert runs.fail_silent(db, older_than=silent) == []
    run.heartbeat_at = utcnow() - dt.timedelta(seconds=300)
    db.flush()
    assert [r.id for r in runs.fail_silent(db, older_than=silent)] == [run.id]
    assert run.status == "FAILURE" and run.phase == "failed"
    assert "training@host-b" in run.error and "over 120 s" in run.error
    assert "stopped unexpectedly" in run.error and "Start the training again" in run.error
    assert not runs.beat(db, run_id=run.id)  # a worker that comes back finds its run ended
    assert runs.claim(db, run_id=run.id, celery_id="c1-redelivered") is None
