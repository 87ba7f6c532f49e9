"""Issue #14 §4: one lifecycle for every kind of job (shared/lifecycle.py).

Each rule is checked on the three kinds, studies, training runs and predictions, with rows made
as the web edge makes them: the same claim, attempts, refusals, end, sweeps, retry and events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy.exc as sa_exc

from shared import events, jobs, lifecycle
from shared.db.base import utcnow
from shared.errors import ServiceUnavailable
from shared.extractions import runs as study_runs
from shared.extractions.models import FeatureExtraction
from shared.modeling import predictions
from shared.modeling import runs as training_runs
from shared.modeling.models import TrainingRun
from tests.support.factories import make_extraction, make_outcome, new_extraction
from tests.webapp.test_models_api import PATIENTS, classification_model

OWNER = "user-bob"


def queued_study(db) -> Any:
    """A PENDING study of a new extraction, its Celery id stored before queueing."""
    (study,) = new_extraction(db, user_id=OWNER, patients=["P0"]).tasks
    return study


def queued_run(db) -> Any:
    """A PENDING training run, as M2 creates it."""
    extraction = make_extraction(db, OWNER, "album-l", PATIENTS[:3])
    outcome = make_outcome(db, OWNER, "album-l", {"P01": "1"})
    run = TrainingRun(
        user_id=OWNER,
        album_id="album-l",
        training_id="train_l",
        status="PENDING",
        phase="pending",
        parameters={},
        feature_extraction_id=extraction.id,
        label_category_id=outcome.id,
    )
    db.add(run)
    db.flush()
    run.task_id = training_runs.TRAINING.task_id(run)
    return run


def queued_prediction(db) -> Any:
    """A PENDING prediction, as P1 creates it."""
    extraction = make_extraction(db, OWNER, "album-p", PATIENTS)
    outcome = make_outcome(db, OWNER, "album-p", {p: "yes" for p in PATIENTS})
    model = classification_model(
        db, extraction, outcome, test_patients=PATIENTS[:6], input_columns=None
    )
    return predictions.start(db, user_id=OWNER, model_id=model.id, extraction_id=extraction.id)


KINDS: dict[str, tuple[lifecycle.Kind, Callable[[Any], Any], str]] = {
    "study": (study_runs.STUDY, queued_study, events.FEATURE_STATUS),
    "training run": (training_runs.TRAINING, queued_run, events.TRAINING_STATUS),
    "prediction": (predictions.PREDICTION, queued_prediction, events.PREDICTION_STATUS),
}


@pytest.fixture(params=list(KINDS))
def job(request, db) -> tuple[lifecycle.Kind, Any, str]:
    """A kind of job, a queued row of it, and its event's name."""
    kind, make, event = KINDS[request.param]
    row = make(db)
    db.flush()
    return kind, row, event


def claim(db, kind: lifecycle.Kind, row: Any, celery_id: str | None, worker: str = "w@a") -> Any:
    """Claim a row for a message, as a worker does."""
    return lifecycle.claim(db, kind, row_id=row.id, celery_id=celery_id, worker=worker)


def test_a_claim_starts_the_row_and_names_its_worker(db, job):
    kind, row, _ = job
    assert claim(db, kind, row, kind.task_id(row), worker="node@host-b") is row
    assert (row.status, row.attempts, row.worker) == ("STARTED", 1, "node@host-b")
    assert row.task_id == kind.task_id(row) and row.started_at is not None and row.error is None
    if kind.beats:
        assert row.heartbeat_at == row.started_at  # the claim is the first sign of life


def test_a_redelivered_message_counts_an_attempt_until_the_row_fails(db, job):
    kind, row, _ = job
    celery_id = kind.task_id(row)
    for attempt in range(1, lifecycle.MAX_ATTEMPTS + 1):  # the worker dies after each claim
        assert claim(db, kind, row, celery_id) is row and row.attempts == attempt
    refused = claim(db, kind, row, celery_id)  # no endless loop
    assert refused == lifecycle.Refused(row.id, failed_now=True, parent_id=kind.parent_of(row))
    assert row.status == "FAILURE" and row.finished_at is not None
    assert row.error == f"{kind.lost_message} ({lifecycle.MAX_ATTEMPTS} attempts)"
    assert claim(db, kind, row, celery_id) == lifecycle.Refused(
        row.id, failed_now=False, parent_id=kind.parent_of(row)
    )


def test_an_older_copy_of_a_message_runs_nothing_and_counts_nothing(db, job):
    kind, row, _ = job
    old = kind.task_id(row)
    row.requeues += 1
    row.task_id = kind.resent_id(row)  # sent again under a new id
    assert isinstance(claim(db, kind, row, old), lifecycle.Refused)
    assert (row.status, row.attempts) == ("PENDING", 0)
    assert claim(db, kind, row, row.task_id) is row  # the new copy runs it
    assert isinstance(claim(db, kind, row, old), lifecycle.Refused)  # not twice either
    assert (row.status, row.attempts) == ("STARTED", 1)


def test_an_ended_row_stays_ended(db, job):
    kind, row, _ = job
    claim(db, kind, row, kind.task_id(row))
    lifecycle.succeed(db, kind, row)
    assert row.status == "SUCCESS" and row.finished_at is not None
    assert lifecycle.fail_by_id(db, kind, row_id=row.id, message="late") is None
    assert isinstance(claim(db, kind, row, kind.task_id(row)), lifecycle.Refused)
    assert row.status == "SUCCESS" and row.attempts == 1
    assert lifecycle.claim(db, kind, row_id=987654321, celery_id="x", worker="w") is None


def test_rows_left_running_are_failed_by_the_sweeps(db, job):
    kind, row, _ = job
    claim(db, kind, row, kind.task_id(row), worker="node@host-a")
    assert lifecycle.fail_orphaned(db, kind, worker="node@host-b") == []
    assert lifecycle.fail_stale(db, kind, older_than=dt.timedelta(hours=1)) == []
    row.updated_at = utcnow() - dt.timedelta(hours=2)  # an explicit value beats onupdate
    db.flush()
    assert lifecycle.fail_stale(db, kind, older_than=dt.timedelta(hours=1)) == [row]
    assert row.status == "FAILURE" and row.error == kind.lost_message


def test_a_restarted_worker_fails_what_it_left_running(db, job):
    kind, row, _ = job
    claim(db, kind, row, kind.task_id(row), worker="node@host-a")
    assert lifecycle.fail_orphaned(db, kind, worker="node@host-a") == [row]
    assert row.status == "FAILURE" and row.error == kind.lost_message


def test_at_start_up_a_worker_fails_its_own_runs_but_sends_its_studies_again(db, job):
    kind, row, _ = job
    claim(db, kind, row, kind.task_id(row), worker="node@host-a")
    db.commit()
    ended = lifecycle.recover(kind, worker="node@host-a", time_limit=3600)
    db.refresh(row)
    # A study is safe to run again: the orphan sweep sends it again instead of failing it.
    assert ended == ([] if kind is study_runs.STUDY else [row.id])
    assert row.status == ("STARTED" if kind is study_runs.STUDY else "FAILURE")


@pytest.mark.parametrize("name", ["training run", "prediction"])
def test_a_row_whose_worker_stopped_its_heartbeat_fails_readably(db, name):
    kind, make, _ = KINDS[name]
    row = make(db)
    claim(db, kind, row, kind.task_id(row), worker="node@host-b")
    silent = dt.timedelta(seconds=120)
    assert lifecycle.fail_silent(db, kind, older_than=silent) == []
    row.heartbeat_at = utcnow() - dt.timedelta(seconds=300)  # host B died 5 minutes ago
    db.flush()
    assert lifecycle.beat(db, kind, row_id=row.id)  # a late beat of a live worker: alive again
    db.refresh(row)
    assert lifecycle.fail_silent(db, kind, older_than=silent) == []
    row.heartbeat_at = utcnow() - dt.timedelta(seconds=300)
    db.flush()
    assert lifecycle.fail_silent(db, kind, older_than=silent) == [row]
    assert row.status == "FAILURE" and row.phase == "failed"
    assert "node@host-b" in row.error and "over 120 s" in row.error
    assert f"Start the {name} again" in row.error
    assert not lifecycle.beat(db, kind, row_id=row.id)  # a worker that comes back: ended


def test_studies_do_not_beat():
    # A lost host's studies are found by the orphan sweep (Celery's inspect) and sent again.
    assert not study_runs.STUDY.beats and not study_runs.STUDY.fails_orphans
    assert training_runs.TRAINING.beats and predictions.PREDICTION.beats


def test_a_failure_is_committed_then_announced_to_the_owner_only(db, job, published):
    kind, row, event = job
    claim(db, kind, row, kind.task_id(row))
    db.commit()
    assert lifecycle.fail_job(kind, row.id, "No contours in this study")
    db.refresh(row)
    assert row.status == "FAILURE" and row.error == "No contours in this study"
    seen = [(room, data) for name, room, data in published() if name == event]
    assert seen and {room for room, _ in seen} == {events.user_room(OWNER)}
    text = " ".join(str(value) for _, data in seen for value in data.values())
    assert "No contours in this study" in text
    assert not lifecycle.fail_job(kind, row.id, "again")  # ended: nothing to change or say


def test_a_broker_outage_at_queueing_fails_the_rows_with_a_readable_error(db, job, monkeypatch):
    kind, row, _ = job
    db.commit()

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(jobs, "send", refuse)
    with pytest.raises(ServiceUnavailable):
        lifecycle.enqueue(db, kind, [row])
    db.refresh(row)
    assert row.status == "FAILURE"
    assert row.error == f"Could not queue the {kind.name} (task queue unavailable)"
    if (parent := kind.parent_of(row)) is not None:  # the study's extraction is finished too
        assert db.get(FeatureExtraction, parent).finished_at is not None


def test_a_transient_database_error_is_retried_and_announced_once(db, job, published):
    kind, row, event = job
    claim(db, kind, row, kind.task_id(row))
    db.commit()
    calls: list[int] = []

    def fail_once_then_end(session: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the server went away (2013: lost connection during query)
            raise sa_exc.OperationalError("UPDATE", {}, Exception(2013, "Lost connection"))
        return lifecycle.fail_by_id(session, kind, row_id=row.id, message="after a retry")

    assert lifecycle.change(kind, row.id, fail_once_then_end, what="test")
    db.refresh(row)
    assert len(calls) == 2 and row.error == "after a retry"
    announced = [d for name, _, d in published() if name == event]
    assert sum("after a retry" in str(d) for d in announced) == 1


def test_each_kind_queues_on_its_own_queue():
    assert study_runs.STUDY.queue == jobs.EXTRACTION_QUEUE
    assert training_runs.TRAINING.queue == jobs.TRAINING_QUEUE
    assert predictions.PREDICTION.queue == jobs.PREDICTION_QUEUE
    assert {kind.table.__tablename__ for kind, _, _ in KINDS.values()} == {
        "feature_extraction_task",
        "training_run",
        "prediction",
    }
