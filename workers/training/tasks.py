"""Celery edge of model training: claim the run, assemble the data, train, store, notify.

The task receives the run's row id only. Progress is written to the `training_run` row, then
published as `training-status` to the owner's room. The model row and its pipeline are
written in one transaction at the end, so a killed worker never leaves half a model.
"""

from __future__ import annotations

import io
import logging
import math
import time
from typing import Any

import joblib
import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from joblib.externals.loky.process_executor import TerminatedWorkerError

from shared import jobs, runtime
from shared.db.session import session_scope
from shared.errors import DomainError
from shared.labels.models import LabelCategory
from shared.modeling import dataset, runs
from shared.modeling.plan import TrainingInputError
from shared.modeling.service import to_read
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


class Progress:
    """The engine's progress callback: row first, then the event (picklable: ids only).

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
        """Write the phase and step to the run's row."""
        with session_scope() as session:
            runs.progress(
                session, run_id=self.job.run_id, phase=phase, current=current, total=total
            )


# Time limits: workers.celery_app.task_limits, from the worker's settings.
@app.task(name=jobs.TRAIN_MODEL, bind=True, acks_late=True)
def train_model(self, run_id: int) -> str:
    """Train the model of one training run."""
    with session_scope() as session:
        claimed = runs.claim(
            session, run_id=run_id, celery_id=self.request.id, worker=self.request.hostname
        )
        if not isinstance(claimed, runs.RunJob):
            if claimed is not None:  # out of attempts: tell the owner
                session.commit()
                runs.publish_failed(claimed)
            log.info("training run %s: nothing to do", run_id)
            return "skipped"
    job = claimed
    log.info("training run %s (%s), attempt %d", run_id, job.training_id, job.attempt)
    try:
        _train(job)
        return "success"
    except (TrainingInputError, DomainError, ValueError) as exc:
        _fail(job, str(exc) or type(exc).__name__)
    except (SoftTimeLimitExceeded, TrainingTooLong):
        limit = runtime.current().settings.training_task_time_limit
        _fail(job, f"Training took longer than {limit} s")
    except TerminatedWorkerError:
        _fail(job, GRID_PROCESS_LOST)
    except Exception as exc:  # the message goes to the row; the traceback to the log only
        log.exception("training run %s: unexpected error", run_id)
        _fail(job, f"Unexpected error during training: {type(exc).__name__}: {exc}")
    return "failure"


def _train(job: runs.RunJob) -> None:
    """Assemble the data, fit, store the model with its pipeline, announce it."""
    settings = runtime.current().settings
    data = _training_data(job)
    algorithms = job.parameters.get("algorithms")
    result = engine.train(
        data,
        Progress(job, settings.training_task_time_limit - 60),
        algorithms=tuple(algorithms) if algorithms else None,
        n_jobs=settings.grid_search_concurrency,
    )
    runs.publish(job, phase="saving")
    blob = _dump(result.pipeline)
    with session_scope() as session:
        runs.progress(session, run_id=job.run_id, phase="saving", current=None, total=None)
        model = runs.complete(
            session, run_id=job.run_id, fields=_model_fields(job, result), artifact=blob
        )
        if model is None:
            log.info("training run %s ended elsewhere; result dropped", job.run_id)
            return
        session.commit()
        (body,) = to_read(session, [model])
    log.info("training run %s: model %s stored (%d bytes)", job.run_id, body.id, len(blob))
    runs.publish(job, complete=True, model=body.model_dump(mode="json", by_alias=True))


def _training_data(job: runs.RunJob) -> engine.TrainingData:
    """Build the engine's input from the stored features, clinical data and labels."""
    params = job.parameters
    training = list(params["training_patients"])
    test = params.get("test_patients")
    patients = [*training, *(test or [])]
    with session_scope() as session:
        category = session.get(LabelCategory, job.label_category_id)
        if category is None:
            raise TrainingInputError("The outcome was deleted")
        labels = dataset.stored_labels(session, category)
        features, specs = dataset.feature_table(
            session,
            user_id=job.user_id,
            album_id=job.album_id,
            extraction_id=job.extraction_id,
            patients=patients,
            feature_ids=params.get("feature_ids"),
        )
    labelled = [p for p in patients if p in labels.patients]
    if len(labelled) != len(patients):
        raise TrainingInputError("The outcome's labels changed since the training was requested")
    if features.shape[1] == 0:
        raise TrainingInputError("Neither clinical nor imaging features were selected")
    return engine.TrainingData(
        kind=params["kind"],
        features=features,
        clinical=tuple(
            engine.ClinicalColumn(s.name, s.feat_type, s.encoding, s.missing_values) for s in specs
        ),
        outcome=labels.frame(patients),
        positive_class=params.get("positive_class"),
        training_patients=tuple(training),
        test_patients=None if test is None else tuple(test),
    )


def _dump(pipeline: Any) -> bytes:
    """Serialise the fitted pipeline as compressed joblib bytes."""
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=COMPRESSION)
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    """Turn numpy scalars and arrays into JSON values (NaN kept as float: "N/A" on output)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _nan_free(value: Any) -> Any:
    """Replace NaN and infinities with "N/A" inside JSON columns (MySQL JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "N/A"
    if isinstance(value, dict):
        return {k: _nan_free(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_free(v) for v in value]
    return value


def _model_fields(job: runs.RunJob, result: Any) -> dict[str, Any]:
    """Map a TrainingResult to the model row's columns."""
    params = job.parameters
    kind = params["kind"]
    stamp = int(time.time())
    safe = lambda v: _nan_free(_json_safe(v))  # noqa: E731
    return {
        "name": f"{job.album_name}_model_{kind.capitalize()}_{stamp}",
        "kind": kind,
        "best_algorithm": result.best_algorithm,
        "best_data_normalization": result.best_data_normalization,
        "data_splitting_type": params["data_splitting_type"],
        "train_test_split_type": params["train_test_split_type"],
        "training_validation": result.training_validation,
        "test_validation": result.test_validation,
        "feature_names": list(result.feature_names),
        "input_columns": list(result.input_columns),
        "training_patient_ids": list(params["training_patients"]),
        "test_patient_ids": params.get("test_patients"),
        "training_metrics": safe(result.training_metrics),
        "test_metrics": safe(result.test_metrics),
        "test_predictions": safe(result.test_predictions),
        "test_predictions_probabilities": safe(result.test_predictions_probabilities),
        "test_bootstrap_values": safe(result.test_bootstrap_values),
        "test_scores_values": safe(result.test_scores_values),
        "test_feature_importance": safe(result.test_feature_importance),
        "test_outcomes": safe(result.test_outcomes),
        "hyperparameters": safe(result.hyperparameters),
        "cv_scores": safe(result.cv_scores),
        "cv_signature": safe(result.cv_signature),
        "selection_cv_metrics": safe(result.selection_cv_metrics),
        "evaluation": safe(result.evaluation),
        "library_versions": safe(result.library_versions),
        "dropped_patients": list(result.dropped_patients),
        "left_out_patients": list(params.get("left_out_patients") or []),
        "positive_class": params.get("positive_class"),
    }


def _fail(job: runs.RunJob, message: str) -> None:
    """Record a failed run with its readable message and announce it."""
    log.warning("training run %s failed: %s", job.run_id, message)
    with session_scope() as session:
        run = runs.fail_by_id(session, run_id=job.run_id, message=message)
        if run is None:
            return
        session.commit()
        runs.publish_failed(run)
