"""Issue #15 §9: a job (a study, a training run, a prediction) whose broker message was lost
before any worker took it is sent again once, then failed with a readable message and a failure
event (issue #14 §4: the studies come from the same sweep).

Real Redis (the test broker and Socket.IO queue) and MariaDB; no worker listens, so messages
stay where the test puts them. The sweep is the workers' own (`sweep_lost_messages`).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from shared import events, jobs, lifecycle, lost_messages
from shared.extractions import runs as study_runs
from shared.modeling import predictions, runs
from shared.modeling.models import Prediction, TrainingRun
from tests.support.broker import UNACKED_TAG
from tests.support.factories import make_extraction, make_outcome, new_extraction
from tests.webapp.test_models_api import PATIENTS, classification_model
from workers.celery_app import broker_task_ids, sweep_lost_messages

AFTER = 120  # the default LOST_MESSAGE_AFTER_SECONDS: rows are aged past it by hand


@pytest.fixture
def jobs_rows(db):
    """A PENDING training run and a PENDING prediction of bob's, as the web edge creates them."""
    extraction = make_extraction(db, "user-bob", "album-x", PATIENTS)
    category = make_outcome(db, "user-bob", "album-x", {p: "yes" for p in PATIENTS})
    model = classification_model(
        db, extraction, category, test_patients=PATIENTS[:6], input_columns=None
    )
    run = TrainingRun(
        user_id="user-bob",
        album_id="album-x",
        training_id="train_lost",
        status="PENDING",
        phase="pending",
        feature_extraction_id=extraction.id,
        label_category_id=category.id,
        parameters={},
    )
    db.add(run)
    db.flush()
    run.task_id = runs.TRAINING.task_id(run)
    prediction = predictions.start(
        db, user_id="user-bob", model_id=model.id, extraction_id=extraction.id
    )
    db.commit()
    return run, prediction


def age(db, *rows) -> None:
    """Make rows look unchanged for longer than the sweep waits."""
    for row in rows:
        db.execute(
            sa.update(type(row))
            .where(type(row).id == row.id)
            .values(updated_at=sa.func.now() - sa.text(f"INTERVAL {AFTER + 60} SECOND"))
        )
    db.commit()
    for row in rows:
        db.refresh(row)


def queued_ids(broker, queue: str) -> list[str]:
    """Return the Celery ids waiting in a queue."""
    return [json.loads(raw)["headers"]["id"] for raw in broker.lrange(queue, 0, -1)]


def test_a_lost_message_is_sent_again_once_then_the_job_fails(db, broker, published, jobs_rows):
    run, prediction = jobs_rows
    # Queued as the web edge does; then the broker loses both messages (e.g. a flushed Redis).
    jobs.send(jobs.TRAIN_MODEL, run.id, task_id=run.task_id)
    jobs.send(jobs.PREDICT, prediction.id, task_id=predictions.PREDICTION.task_id(prediction))
    age(db, run, prediction)
    assert sweep_lost_messages() == {"requeued": [], "failed": []}  # both still queued
    broker.delete(jobs.TRAINING_QUEUE, jobs.PREDICTION_QUEUE)

    first = sweep_lost_messages()
    db.refresh(run)
    db.refresh(prediction)
    print(f"\nfirst sweep: {first}; task ids now {run.task_id}, {prediction.task_id}")
    names = [f"training run {run.id}", f"prediction {prediction.id}"]
    assert first == {"requeued": names, "failed": []}
    assert (run.status, run.requeues, run.task_id) == ("PENDING", 1, f"training-run-{run.id}-r1")
    assert (prediction.status, prediction.requeues) == ("PENDING", 1)
    assert queued_ids(broker, jobs.TRAINING_QUEUE) == [run.task_id]
    assert queued_ids(broker, jobs.PREDICTION_QUEUE) == [prediction.task_id]
    assert sweep_lost_messages() == {"requeued": [], "failed": []}  # just sent: not lost

    broker.delete(jobs.TRAINING_QUEUE, jobs.PREDICTION_QUEUE)  # lost again
    age(db, run, prediction)
    second = sweep_lost_messages()
    db.refresh(run)
    db.refresh(prediction)
    print(f"second sweep: {second}; run: {run.error!r}; prediction: {prediction.error!r}")
    assert second == {"requeued": [], "failed": names}
    assert run.status == prediction.status == "FAILURE"
    assert "lost its message" in run.error and "Start the training again" in run.error
    assert "lost its message" in prediction.error
    seen = published()
    room = events.user_room("user-bob")
    assert (events.TRAINING_STATUS, room, {"training-id": "train_lost", "phase": "pending"}) in seen
    assert (
        events.TRAINING_STATUS,
        room,
        {"training-id": "train_lost", "failed": True, "error": run.error},
    ) in seen
    failed = [d for e, r, d in seen if e == events.PREDICTION_STATUS and d.get("failed")]
    assert failed == [
        {
            "prediction-id": prediction.id,
            "model_id": prediction.model_id,
            "status": "FAILURE",
            "phase": "failed",
            "failed": True,
            "error": prediction.error,
        }
    ]
    assert {r for _, r, _ in seen} == {room}  # the owner's room only


def test_jobs_held_by_a_worker_waiting_or_fresh_are_left_alone(db, broker, jobs_rows):
    run, prediction = jobs_rows
    # The run's message was handed to a worker (the delivered set, as kombu keeps it).
    message = {"headers": {"id": run.task_id}, "properties": {}}
    broker.hset("unacked", UNACKED_TAG, json.dumps([message, "", jobs.TRAINING_QUEUE]))
    waiting = predictions.PREDICTION.task_id(prediction)
    jobs.send(jobs.PREDICT, prediction.id, task_id=waiting)  # waiting its turn
    age(db, run, prediction)
    assert broker_task_ids([jobs.PREDICTION_QUEUE]) >= {run.task_id, waiting}
    assert sweep_lost_messages() == {"requeued": [], "failed": []}
    broker.delete(jobs.PREDICTION_QUEUE)
    broker.hdel("unacked", UNACKED_TAG)
    fresh = lost_messages.candidates(
        db, predictions.PREDICTION, older_than=dt.timedelta(seconds=10**6)
    )
    assert fresh == []  # unchanged for less than the delay: not a candidate yet


def test_an_older_copy_of_a_job_sent_again_is_refused(db, jobs_rows):
    run, prediction = jobs_rows
    old_run, old_prediction = run.task_id, predictions.PREDICTION.task_id(prediction)
    run.task_id, prediction.task_id = f"{old_run}-r1", f"{old_prediction}-r1"  # sent again
    db.commit()
    for kind, row, old in (
        (runs.TRAINING, run, old_run),
        (predictions.PREDICTION, prediction, old_prediction),
    ):
        assert lifecycle.claim(db, kind, row_id=row.id, celery_id=old, worker="w") == (
            lifecycle.Refused(row.id, failed_now=False)
        )
        assert row.status == "PENDING" and row.attempts == 0  # the old copy counted nothing
        assert lifecycle.claim(db, kind, row_id=row.id, celery_id=row.task_id, worker="w") is row
    assert db.get(Prediction, prediction.id).status == "STARTED"


def test_a_lost_study_is_sent_again_once_then_fails_and_its_extraction_finishes(
    db, broker, published
):
    extraction = new_extraction(db, user_id="user-bob", patients=["P9"])
    (study,) = extraction.tasks
    db.commit()
    jobs.send(jobs.EXTRACT_STUDY, study.id, task_id=study.task_id)
    age(db, study)
    assert sweep_lost_messages() == {"requeued": [], "failed": []}  # still queued
    broker.delete(jobs.EXTRACTION_QUEUE)

    assert sweep_lost_messages() == {"requeued": [f"study {study.id}"], "failed": []}
    db.refresh(study)
    assert (study.status, study.requeues) == ("PENDING", 1)
    assert queued_ids(broker, jobs.EXTRACTION_QUEUE) == [study.task_id]

    broker.delete(jobs.EXTRACTION_QUEUE)  # lost again
    age(db, study)
    assert sweep_lost_messages() == {"requeued": [], "failed": [f"study {study.id}"]}
    db.refresh(study)
    db.refresh(extraction)
    assert study.status == "FAILURE" and "lost its message" in study.error
    assert extraction.finished_at is not None  # its last study ended: the extraction too
    seen = published()
    studies = [d for e, _, d in seen if e == events.FEATURE_STATUS]
    assert studies[-1]["status"] == "FAILURE" and studies[-1]["status_message"] == study.error
    final = [d for e, _, d in seen if e == events.EXTRACTION_STATUS and "tasks" in d]
    assert len(final) == 1 and final[0]["id"] == extraction.id
    assert study_runs.STUDY.queue == jobs.EXTRACTION_QUEUE
