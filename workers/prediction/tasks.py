"""Celery edge of a prediction: claim the row, load the model and the data, predict, store.

The task receives the prediction's row id only. Each step is written to the `prediction` row,
then published as `prediction-status` to the owner's room. The rules (inputs, validation,
result shape) live in `shared/modeling/predictions.py`; the computation is the pure
`engine.predict`. Runs on its own queue and worker, so it never waits behind a training.
"""

from __future__ import annotations

import io
import logging

import joblib
from celery.exceptions import SoftTimeLimitExceeded

from shared import jobs, runtime
from shared.db.session import session_scope
from shared.errors import DomainError
from shared.modeling import predictions
from shared.modeling.plan import TrainingInputError
from workers.celery_app import app
from workers.training import engine

log = logging.getLogger(__name__)


# Time limits: workers.celery_app.task_limits, from the worker's settings.
@app.task(name=jobs.PREDICT, bind=True, acks_late=True)
def run_prediction(self, prediction_id: int) -> str:
    """Run one prediction job."""
    with session_scope() as session:
        claimed = predictions.claim(
            session,
            prediction_id=prediction_id,
            celery_id=self.request.id,
            worker=self.request.hostname,
        )
        session.commit()
    if not isinstance(claimed, predictions.PredictionJob):
        if claimed is not None:  # out of attempts: tell the owner
            predictions.publish_failed(claimed)
        log.info("prediction %s: nothing to do", prediction_id)
        return "skipped"
    job = claimed
    predictions.publish(job, status="STARTED", phase="loading")
    try:
        _predict(job)
        return "success"
    except (TrainingInputError, DomainError, ValueError) as exc:
        _fail(job, str(exc) or type(exc).__name__)
    except SoftTimeLimitExceeded:
        limit = runtime.current().settings.prediction_task_time_limit
        _fail(job, f"The prediction took longer than {limit} s")
    except Exception as exc:  # the message goes to the row; the traceback to the log only
        log.exception("prediction %s: unexpected error", prediction_id)
        _fail(job, f"Unexpected error during the prediction: {type(exc).__name__}: {exc}")
    return "failure"


def _predict(job: predictions.PredictionJob) -> None:
    """Read the inputs, predict (and validate when labelled), store and announce the result."""
    with session_scope() as session:
        prepared = predictions.inputs(session, job)
        predictions.progress(session, prediction_id=job.prediction_id, phase="predicting")
        session.commit()
    predictions.publish(job, status="PROGRESS", phase="predicting")
    pipeline = joblib.load(io.BytesIO(prepared.artifact))
    result = engine.predict(
        pipeline, prepared.kind, prepared.features, prepared.outcome, prepared.positive_class
    )
    with session_scope() as session:
        row = predictions.complete(
            session,
            prediction_id=job.prediction_id,
            prepared=prepared,
            predictions=result.predictions,
            skipped=result.skipped,
            metrics=result.metrics,
        )
        if row is None:
            log.info("prediction %s ended elsewhere; result dropped", job.prediction_id)
            return
        session.commit()
        predictions.publish_complete(row)
    log.info("prediction %s: %d patients predicted", job.prediction_id, len(result.predictions))


def _fail(job: predictions.PredictionJob, message: str) -> None:
    """Record a failed prediction with its readable message and announce it."""
    log.warning("prediction %s failed: %s", job.prediction_id, message)
    with session_scope() as session:
        row = predictions.fail_by_id(session, prediction_id=job.prediction_id, message=message)
        if row is None:
            return
        session.commit()
        predictions.publish_failed(row)
