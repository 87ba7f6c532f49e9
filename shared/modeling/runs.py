"""Training-run rules for the worker: claim, progress, fail, complete, recover; and the events.

The `training_run` row is the truth for status, phase, progress and error. Functions take a
session and never commit; the task commits, then publishes the matching `training-status`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared import events, jobs, lost_messages
from shared.db.base import utcnow
from shared.extractions.models import FeatureExtraction
from shared.labels.models import LabelCategory
from shared.modeling import artifacts
from shared.modeling.models import TrainedModel, TrainingRun

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
LOST_MESSAGE = "The worker training this model stopped unexpectedly"
QUEUE_LOST_MESSAGE = (
    "This training never reached a worker: the task queue lost its message, also when it was "
    "sent again. Start the training again."
)
SILENT_MESSAGE = (
    "The worker training this model ({worker}) stopped unexpectedly: no sign of life for over "
    "{seconds} s (its machine or process was lost). Start the training again."
)
TASK_ID_PREFIX = "training-run"
RUNNING = ("STARTED", "PROGRESS")
DONE = ("SUCCESS", "FAILURE")


@dataclass(frozen=True)
class RunJob:
    """Plain inputs of one training run (no ORM object outlives its session)."""

    run_id: int
    training_id: str
    user_id: str
    album_id: str
    album_name: str
    extraction_id: int
    collection_id: int | None
    label_category_id: int
    label_type: str
    parameters: dict[str, Any]
    total_steps: int
    published_steps: int  # training events already sent by earlier attempts
    attempt: int


def claim(
    session: so.Session, *, run_id: int, celery_id: str | None, worker: str | None = None
) -> RunJob | TrainingRun | None:
    """Start a run and return its inputs.

    Returns None when the run is gone or already ended, or the message is an older copy of a
    run sent again (the new copy runs it), and the failed row itself when a redelivered run
    has used up its attempts (the caller announces the failure).
    """
    run = session.get(TrainingRun, run_id, with_for_update=True)
    if run is None or run.status in DONE or lost_messages.stale_copy(run, celery_id):
        return None
    if run.attempts >= MAX_ATTEMPTS:
        return fail(session, run=run, message=f"{LOST_MESSAGE} ({run.attempts} attempts)")
    extraction = session.get(FeatureExtraction, run.feature_extraction_id)
    category = session.get(LabelCategory, run.label_category_id)
    run.attempts += 1
    run.status = "STARTED"
    run.phase = "training"
    run.task_id = celery_id or run.task_id
    run.worker = worker
    run.started_at = run.heartbeat_at = utcnow()
    run.error = None
    session.flush()
    return RunJob(
        run_id=run.id,
        training_id=run.training_id,
        user_id=run.user_id,
        album_id=run.album_id,
        album_name=(extraction.album_name if extraction else None) or run.album_id,
        extraction_id=run.feature_extraction_id,
        collection_id=run.feature_collection_id,
        label_category_id=run.label_category_id,
        label_type=category.label_type if category else "Classification",
        parameters=dict(run.parameters),
        total_steps=run.total_steps,
        published_steps=run.current_step,
        attempt=run.attempts,
    )


def progress(
    session: so.Session, *, run_id: int, phase: str, current: int | None, total: int | None
) -> TrainingRun | None:
    """Record the phase and step; the step only grows (a retried run resumes its count)."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        return None
    run.status = "PROGRESS"
    run.phase = phase
    if phase == "training" and current is not None:
        run.current_step = max(run.current_step, current)
    if phase == "training" and total is not None:
        run.total_steps = total
    session.flush()
    return run


def fail(session: so.Session, *, run: TrainingRun, message: str) -> TrainingRun:
    """Mark a run failed with a readable message."""
    run.status = "FAILURE"
    run.phase = "failed"
    run.error = message[:4000]
    run.finished_at = utcnow()
    session.flush()
    return run


def fail_by_id(session: so.Session, *, run_id: int, message: str) -> TrainingRun | None:
    """Mark a run failed, if it still exists and has not ended."""
    run = session.get(TrainingRun, run_id, with_for_update=True)
    if run is None or run.status in DONE:
        return None
    return fail(session, run=run, message=message)


def complete(
    session: so.Session, *, run_id: int, fields: dict[str, Any], artifact: bytes
) -> TrainedModel | None:
    """Write the model row and its pipeline, and end the run, in the caller's one transaction."""
    run = session.get(TrainingRun, run_id, with_for_update=True)
    if run is None or run.status in DONE:
        return None
    model = TrainedModel(
        user_id=run.user_id,
        album_id=run.album_id,
        feature_extraction_id=run.feature_extraction_id,
        feature_collection_id=run.feature_collection_id,
        label_category_id=run.label_category_id,
        **fields,
    )
    session.add(model)
    session.flush()
    artifacts.attach(session, model, artifact)
    run.status = "SUCCESS"
    run.phase = "complete"
    run.model_id = model.id
    run.finished_at = utcnow()
    session.flush()
    return model


def fail_stale(session: so.Session, *, older_than: dt.timedelta) -> list[TrainingRun]:
    """Fail runs that claim to run but have not reported for longer than any run may take."""
    cutoff = utcnow() - older_than
    stale = session.scalars(
        sa.select(TrainingRun).where(
            TrainingRun.status.in_(RUNNING), TrainingRun.updated_at < cutoff
        )
    ).all()
    return [fail(session, run=run, message=LOST_MESSAGE) for run in stale]


def beat(session: so.Session, *, run_id: int) -> bool:
    """Record that the run's worker is alive; False once the run is no longer running."""
    result = session.execute(
        sa.update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status.in_(RUNNING))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def fail_silent(session: so.Session, *, older_than: dt.timedelta) -> list[TrainingRun]:
    """Fail runs whose worker has not sent a heartbeat for `older_than` (its host was lost).

    A worker killed whole never acknowledges its message, which the broker hands out again only
    after the visibility timeout (hours); the row would say "training" all that time.
    """
    cutoff = utcnow() - older_than
    silent = session.scalars(
        sa.select(TrainingRun)
        .where(
            TrainingRun.status.in_(RUNNING),
            sa.func.coalesce(TrainingRun.heartbeat_at, TrainingRun.updated_at) < cutoff,
        )
        .with_for_update()
    ).all()
    seconds = int(older_than.total_seconds())
    return [
        fail(session, run=run, message=SILENT_MESSAGE.format(worker=run.worker, seconds=seconds))
        for run in silent
    ]


def fail_orphaned(session: so.Session, *, worker: str) -> list[TrainingRun]:
    """Fail runs a worker of this name left running: it just started, so it runs none of them.

    A killed threads-pool worker's message returns only after the broker's visibility timeout;
    its restart (same node name) ends the run at once instead. A run redelivered later finds it
    ended and is skipped.
    """
    orphaned = session.scalars(
        sa.select(TrainingRun).where(TrainingRun.status.in_(RUNNING), TrainingRun.worker == worker)
    ).all()
    return [fail(session, run=run, message=LOST_MESSAGE) for run in orphaned]


# --- events -------------------------------------------------------------------------------------


def publish(run: TrainingRun | RunJob, **payload: Any) -> None:
    """Send a `training-status` event of a run to its owner's room."""
    body = {"training-id": run.training_id, **payload}
    events.publish(events.TRAINING_STATUS, body, user_id=run.user_id)


def publish_failed(run: TrainingRun) -> None:
    """Announce a failed run with its readable message."""
    publish(run, failed=True, error=run.error or "Training failed")


def publish_requeued(run: TrainingRun) -> None:
    """Announce a run sent again after its message was lost (the frontend shows "pending")."""
    publish(run, phase="pending")


# Runs whose broker message was lost before any worker took it (shared/lost_messages.py).
LIFECYCLE = lost_messages.Lifecycle(
    name="training run",
    table=TrainingRun,
    task=jobs.TRAIN_MODEL,
    id_prefix=TASK_ID_PREFIX,
    lost_message=QUEUE_LOST_MESSAGE,
    fail=lambda session, run, message: fail(session, run=run, message=message),
    announce_requeued=publish_requeued,
    announce_failed=publish_failed,
)
