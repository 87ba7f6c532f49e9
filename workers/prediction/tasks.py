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
import sqlalchemy.orm as so
from celery.exceptions import SoftTimeLimitExceeded

from shared import jobs, lifecycle, runtime
from shared.errors import DomainError
from shared.modeling import predictions
from shared.modeling.models import Prediction
from shared.modeling.plan import TrainingInputError
from workers.celery_app import app
from workers.training import engine

log = logging.getLogger(__name__)


# Time limits: workers.celery_app.task_limits, from the worker's settings.
@app.task(name=jobs.PREDICT, bind=True, acks_late=True)
def run_prediction(self, prediction_id: int) -> str:
    """Run one prediction job."""
    claimed = lifecycle.start(
        predictions.PREDICTION, prediction_id, self.request, job=predictions.prediction_job
    )
    if not isinstance(claimed, predictions.PredictionJob):
        log.info("prediction %s: nothing to do", prediction_id)
        return "skipped"
    job = claimed
    settings = runtime.current().settings
    try:
        with lifecycle.Heartbeat(
            predictions.PREDICTION, job.prediction_id, settings.heartbeat_seconds
        ):
            _predict(job)
        return "success"
    except (TrainingInputError, DomainError, ValueError) as exc:
        _fail(job, str(exc) or type(exc).__name__)
    except SoftTimeLimitExceeded:
        _fail(job, f"The prediction took longer than {settings.prediction_task_time_limit} s")
    except Exception as exc:  # the message goes to the row; the traceback to the log only
        log.exception("prediction %s: unexpected error", prediction_id)
        _fail(job, f"Unexpected error during the prediction: {type(exc).__name__}: {exc}")
    return "failure"


def _predict(job: predictions.PredictionJob) -> None:
    """Read the inputs, predict (and validate when labelled), store and announce the result."""
    prepared: list[predictions.PredictionInputs] = []

    def read_inputs(session: so.Session) -> Prediction | None:
        prepared[:] = [predictions.inputs(session, job)]
        return predictions.progress(session, prediction_id=job.prediction_id, phase="predicting")

    kind = predictions.PREDICTION
    if not lifecycle.change(kind, job.prediction_id, read_inputs, what="read the inputs"):
        log.info("prediction %s ended elsewhere", job.prediction_id)
        return
    (inputs,) = prepared
    pipeline = joblib.load(io.BytesIO(inputs.artifact))
    result = engine.predict(
        pipeline, inputs.kind, inputs.features, inputs.outcome, inputs.positive_class
    )
    stored = lifecycle.change(
        kind,
        job.prediction_id,
        lambda session: predictions.complete(
            session,
            prediction_id=job.prediction_id,
            prepared=inputs,
            predictions=result.predictions,
            skipped=result.skipped,
            metrics=result.metrics,
        ),
        what="store the result",
    )
    if stored:
        log.info("prediction %s: %d patients predicted", job.prediction_id, len(result.predictions))
    else:
        log.info("prediction %s ended elsewhere; result dropped", job.prediction_id)


def _fail(job: predictions.PredictionJob, message: str) -> None:
    """Record a failed prediction with its readable message and announce it."""
    lifecycle.fail_job(predictions.PREDICTION, job.prediction_id, message)
