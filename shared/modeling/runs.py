"""The training run as a job of the common lifecycle (shared/lifecycle.py): its kind, its
inputs, its steps, its end (the model row) and its `training-status` events.

The `training_run` row is the truth for status, phase, progress and error. Functions take a
session and never commit; claiming, failing, the heartbeat and the sweeps are the lifecycle's,
with `TRAINING`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy.orm as so

from shared import events, jobs, lifecycle
from shared.extractions.models import FeatureExtraction
from shared.labels.models import LabelCategory
from shared.modeling import artifacts, read
from shared.modeling.models import TrainedModel, TrainingRun

LOST_MESSAGE = "The worker training this model stopped unexpectedly"
QUEUE_LOST_MESSAGE = (
    "This training never reached a worker: the task queue lost its message, also when it was "
    "sent again. Start the training again."
)


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


def run_job(session: so.Session, run: TrainingRun) -> RunJob:
    """Read the inputs of a claimed run."""
    extraction = session.get(FeatureExtraction, run.feature_extraction_id)
    category = session.get(LabelCategory, run.label_category_id)
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


def complete(
    session: so.Session, *, run_id: int, fields: dict[str, Any], artifact: bytes
) -> TrainingRun | None:
    """Write the model row and its pipeline, and end the run, in the caller's one transaction;
    None when the run ended elsewhere or is gone."""
    run = lifecycle.running(session, TRAINING, run_id, lock=True)
    if run is None:
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
    run.model_id = model.id
    return lifecycle.succeed(session, TRAINING, run)


# --- events -------------------------------------------------------------------------------------


def publish(run: TrainingRun | RunJob, **payload: Any) -> None:
    """Send a `training-status` event of a run to its owner's room."""
    body = {"training-id": run.training_id, **payload}
    events.publish(events.TRAINING_STATUS, body, user_id=run.user_id)


def _announce(session: so.Session, run: TrainingRun) -> None:
    """Publish a run's state: its model once done, its error once failed, "pending" once sent
    again; a claimed run is announced by its first step."""
    if run.status == "SUCCESS":
        model = session.get(TrainedModel, run.model_id)
        (body,) = read.to_read(session, [model])
        publish(run, complete=True, model=body.model_dump(mode="json", by_alias=True))
    elif run.status == "FAILURE":
        publish(run, failed=True, error=run.error or "Training failed")
    elif run.status == lifecycle.PENDING:
        publish(run, phase="pending")
    elif run.status == "PROGRESS":
        publish(run, phase=run.phase)


TRAINING = lifecycle.Kind(
    name="training run",
    table=TrainingRun,
    task=jobs.TRAIN_MODEL,
    id_prefix="training-run",
    lost_message=LOST_MESSAGE,
    queue_lost_message=QUEUE_LOST_MESSAGE,
    announce=_announce,
    on_start=lifecycle.phase("training"),
    on_success=lifecycle.phase("complete"),
    on_failure=lifecycle.phase("failed"),
    beats=True,
)
