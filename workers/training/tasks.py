"""Celery edge of model training: claim the run, read its data (shared/modeling/flows.py), train,
store, notify.

The task receives the run's row id only. Progress is written to the `training_run` row, then
published as `training-status` to the owner's room. The model row and its pipeline are
written in one transaction at the end, so a killed worker never leaves half a model.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import joblib
from celery.exceptions import SoftTimeLimitExceeded
from joblib.externals.loky.process_executor import TerminatedWorkerError

from shared import jobs, lifecycle, runtime
from shared.db.retry import retry_transient
from shared.db.session import session_scope
from shared.errors import DomainError
from shared.modeling import flows, runs
from shared.modeling.interface import Progress
from shared.modeling.plan import TrainingInputError
from workers.celery_app import app
from workers.training import engine

log = logging.getLogger(__name__)
COMPRESSION = 3  # joblib zlib level: small artifacts at little cost
GRID_PROCESS_LOST = (
    "A process of the grid search stopped unexpectedly (killed, or out of memory); "
    "try again, or with fewer features"
)


class TrainingTooLong(Exception):
    """The run passed its time limit (checked at each progress step)."""


class RunProgress(Progress):
    """The engine's Progress of one run: row first, then the event (picklable: ids only).

    It also enforces the run's time limit at each step: Celery's time limits only apply in a
    prefork pool, and the training worker runs in a threads pool (so joblib may use every core).
    """

    def __init__(self, job: runs.RunJob, limit_seconds: float) -> None:
        self.job = job
        self.done = 0  # training steps of this attempt
        self.deadline = time.monotonic() + limit_seconds

    def __call__(self, phase: str, current: int | None = None, total: int | None = None) -> None:
        """Record one step of a phase and announce it."""
        if time.monotonic() > self.deadline:
            raise TrainingTooLong
        if phase == "training":
            self.done += 1
            if self.done <= self.job.published_steps:
                return  # an earlier attempt announced this step already
            self._record(phase, self.done, None)
            runs.publish(self.job, phase="training")
            return
        self._record(phase, current, total)
        payload: dict[str, Any] = {"phase": phase}
        if current is not None and total is not None:
            payload.update(current=int(current), total=int(total))
        runs.publish(self.job, **payload)

    def _record(self, phase: str, current: int | None, total: int | None) -> None:
        """Write the phase and step to the run's row (retried like every lifecycle step)."""

        def unit() -> None:
            with session_scope() as session:
                runs.progress(
                    session, run_id=self.job.run_id, phase=phase, current=current, total=total
                )

        retry_transient(unit, what=f"training run {self.job.run_id}: step")


# Time limits: workers.celery_app.task_limits, from the worker's settings.
@app.task(name=jobs.TRAIN_MODEL, bind=True, acks_late=True)
def train_model(self, run_id: int) -> str:
    """Train the model of one training run."""
    claimed = lifecycle.start(runs.TRAINING, run_id, self.request, job=runs.run_job)
    if not isinstance(claimed, runs.RunJob):
        log.info("training run %s: nothing to do", run_id)
        return "skipped"
    job = claimed
    log.info("training run %s (%s), attempt %d", run_id, job.training_id, job.attempt)
    settings = runtime.current().settings
    try:
        with lifecycle.Heartbeat(runs.TRAINING, job.run_id, settings.heartbeat_seconds):
            _train(job)
        return "success"
    except (TrainingInputError, DomainError, ValueError) as exc:
        _fail(job, str(exc) or type(exc).__name__)
    except (SoftTimeLimitExceeded, TrainingTooLong):
        _fail(job, f"Training took longer than {settings.training_task_time_limit} s")
    except TerminatedWorkerError:
        _fail(job, GRID_PROCESS_LOST)
    except Exception as exc:  # the message goes to the row; the traceback to the log only
        log.exception("training run %s: unexpected error", run_id)
        _fail(job, f"Unexpected error during training: {type(exc).__name__}: {exc}")
    return "failure"


def _train(job: runs.RunJob) -> None:
    """Assemble the data, fit, store the model with its pipeline, announce it."""
    settings = runtime.current().settings
    data = retry_transient(lambda: _training_data(job), what=f"training run {job.run_id}: data")
    algorithms = job.parameters.get("algorithms")
    progress = RunProgress(job, settings.training_task_time_limit - 60)
    result = engine.train(
        data,
        progress,
        algorithms=tuple(algorithms) if algorithms else None,
        n_jobs=settings.grid_search_concurrency,
    )
    runs.publish(job, phase="saving")
    blob = _dump(result.pipeline)
    fields = flows.model_fields(job, result)
    stored = lifecycle.change(
        runs.TRAINING,
        job.run_id,
        lambda session: runs.complete(session, run_id=job.run_id, fields=fields, artifact=blob),
        what="store the model",
    )
    if stored:
        log.info("training run %s: model stored (%d bytes)", job.run_id, len(blob))
    else:
        log.info("training run %s ended elsewhere; result dropped", job.run_id)


def _training_data(job: runs.RunJob) -> Any:
    """Read the run's training data in one unit of work."""
    with session_scope() as session:
        return flows.training_data(session, job)


def _dump(pipeline: Any) -> bytes:
    """Serialise the fitted pipeline as compressed joblib bytes."""
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=COMPRESSION)
    return buffer.getvalue()


def _fail(job: runs.RunJob, message: str) -> None:
    """Record a failed run with its readable message and announce it."""
    lifecycle.fail_job(runs.TRAINING, job.run_id, message)
