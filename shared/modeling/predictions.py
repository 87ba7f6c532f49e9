"""Predictions of a stored model on an extraction: a job, like a training run (issue #15 §8).

The web edge makes the cheap checks (ownership, the features the model needs), creates the
row and queues its id; it never waits for the result. The prediction worker claims the row,
reads its inputs here, runs the pure `engine.predict`, and stores the result here. The row is
the truth (status, phase, error, result); a `prediction-status` event goes to the owner's room
after each commit. It is a job of the common lifecycle (shared/lifecycle.py), with
`PREDICTION`: claiming, failing, the heartbeat and the sweeps are the lifecycle's. Functions
take a session and never commit, except `enqueue`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
import sqlalchemy.orm as so

from shared import events, jobs, lifecycle
from shared.db import owned
from shared.errors import DomainError, InvalidInput, NotFound
from shared.extractions import service as extraction_service
from shared.extractions.models import FeatureExtraction
from shared.features import storage
from shared.labels import service as label_service
from shared.lru import BoundedLru
from shared.modeling import artifacts, dataset, flows, interface
from shared.modeling.models import Prediction, TrainedModel
from shared.modeling.schemas import PatientPrediction, PredictionRead

log = logging.getLogger(__name__)

LOST_MESSAGE = "The worker running this prediction stopped unexpectedly"
QUEUE_LOST_MESSAGE = (
    "This prediction never reached a worker: the task queue lost its message, also when it "
    "was sent again. Start the prediction again."
)


@dataclass(frozen=True)
class PredictionJob:
    """Plain inputs of one prediction (no ORM object outlives its session)."""

    prediction_id: int
    user_id: str
    model_id: int
    extraction_id: int
    attempt: int


@dataclass
class PredictionInputs:
    """What `engine.predict` needs, read from the rows, and how the result will be validated."""

    artifact: bytes
    kind: str
    positive_class: str | None
    features: pd.DataFrame  # one row per patient, the model's input columns
    outcome: pd.DataFrame | None  # the labels that validate the predictions, if any
    label_category_id: int | None
    validation: str  # in words: against what, or why not
    excluded: dict[str, str] = field(default_factory=dict)  # labelled, left out of the metrics


# --- the web edge -------------------------------------------------------------------------------


def url(prediction_id: int) -> str:
    """Return where a prediction is read (GET, owner only)."""
    return f"/predictions/{prediction_id}"


def start(session: so.Session, *, user_id: str, model_id: int, extraction_id: int) -> Prediction:
    """Check a prediction request and create its PENDING row (the caller commits, then queues).

    Only cheap reads: the model and the extraction must be the caller's (404 otherwise), and
    the extraction (with its album's clinical data) must provide every input column.
    """
    model = _owned_model(session, user_id=user_id, model_id=model_id)
    extraction = extraction_service.get_owned(session, user_id=user_id, extraction_id=extraction_id)
    columns = list(model.input_columns or [])
    available = _available(session, extraction) if columns else set()
    missing = interface.missing_columns(columns, available)
    if missing:
        raise InvalidInput(
            interface.missing_text(f"Extraction {extraction.id}", missing), details=missing
        )
    prediction = Prediction(
        user_id=user_id,
        model_id=model.id,
        feature_extraction_id=extraction.id,
        status="PENDING",
        phase="pending",
    )
    session.add(prediction)
    session.flush()  # the id; its message will carry PREDICTION.task_id (prediction-<id>)
    return prediction


# Radiomics feature IDs of finished extractions: no vector is stored once `finished_at` is set,
# so (id, created_at, finished_at) names an immutable set. Saves two queries per request.
_FINISHED_FEATURE_IDS: BoundedLru[tuple[int, dt.datetime, dt.datetime], frozenset[str]] = (
    BoundedLru(256)
)


def _available(session: so.Session, extraction: FeatureExtraction) -> set[str]:
    """Return every column the extraction and its album's clinical data provide."""
    clinical = dataset.clinical_definitions(
        session, user_id=extraction.user_id, album_id=extraction.album_id
    )
    key = (extraction.id, extraction.created_at, extraction.finished_at)
    radiomics = _FINISHED_FEATURE_IDS.get(key) if extraction.finished_at else None
    if radiomics is None:
        radiomics = frozenset(storage.feature_ids(session, extraction_id=extraction.id))
        if extraction.finished_at is not None:
            _FINISHED_FEATURE_IDS.put(key, radiomics)
    return set(radiomics) | {column for column, _ in clinical}


def _owned_model(session: so.Session, *, user_id: str, model_id: int) -> sa.Row:
    """Read the id, owner and input columns of the caller's model (404 for anyone else's).

    Only these columns: the model row's JSON results (bootstrap values, per-resample scores)
    are hundreds of kB that a request would otherwise parse for nothing.
    """
    row = session.execute(
        sa.select(TrainedModel.id, TrainedModel.user_id, TrainedModel.input_columns).where(
            TrainedModel.id == model_id
        )
    ).one_or_none()
    if row is None or row.user_id != user_id:
        raise NotFound("Model not found")
    return row


def enqueue(session: so.Session, *, prediction: Prediction) -> None:
    """Queue the prediction (its row id only); if the broker is down, fail it and say so."""
    lifecycle.enqueue(session, PREDICTION, [prediction])


def get_owned(session: so.Session, *, user_id: str, prediction_id: int) -> Prediction:
    """Return the caller's prediction; another user's answers exactly like a missing one."""
    return owned.get_owned(
        session, Prediction, prediction_id, user_id=user_id, missing="Prediction not found"
    )


def list_for_model(session: so.Session, *, user_id: str, model_id: int) -> list[Prediction]:
    """Return the predictions of the caller's model, newest first (404 for another's model)."""
    _owned_model(session, user_id=user_id, model_id=model_id)
    query = (
        sa.select(Prediction)
        .where(Prediction.model_id == model_id, Prediction.user_id == user_id)
        .order_by(Prediction.id.desc())
    )
    return list(session.scalars(query))


def to_read(row: Prediction) -> PredictionRead:
    """Format a prediction for the API and the `complete` event."""
    return PredictionRead(
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        user_id=row.user_id,
        model_id=row.model_id,
        extraction_id=row.feature_extraction_id,
        label_category_id=row.label_category_id,
        status=row.status,
        phase=row.phase,
        error=row.error,
        attempts=row.attempts,
        requeues=row.requeues,
        started_at=row.started_at,
        finished_at=row.finished_at,
        predictions=[PatientPrediction(**item) for item in row.predictions or []],
        skipped=row.skipped or {},
        excluded_from_metrics=row.excluded_from_metrics or {},
        metrics=row.metrics,
        validation=row.validation,
        n_labelled=row.n_labelled,
        url=url(row.id),
    )


# --- the worker ---------------------------------------------------------------------------------


def prediction_job(_session: so.Session, row: Prediction) -> PredictionJob:
    """Name the inputs of a claimed prediction."""
    return PredictionJob(row.id, row.user_id, row.model_id, row.feature_extraction_id, row.attempts)


def inputs(session: so.Session, job: PredictionJob) -> PredictionInputs:
    """Read the pipeline, the new patients' features and the labels that validate them."""
    model = session.get(TrainedModel, job.model_id)
    extraction = session.get(FeatureExtraction, job.extraction_id)
    if model is None or extraction is None:
        raise DomainError("The model or the extraction was deleted")
    patients = sorted(dataset.extracted_patients(session, extraction.id))
    if not patients:
        raise DomainError(f"Extraction {extraction.id} has no patient with features")
    features, _ = dataset.feature_table(
        session,
        user_id=model.user_id,
        album_id=extraction.album_id,
        extraction_id=extraction.id,
        patients=patients,
        feature_ids=model.input_columns,
    )
    columns = list(model.input_columns or [])
    missing = interface.missing_columns(columns, features.columns)
    if missing:  # the features changed since the request
        raise DomainError(interface.missing_text(f"Extraction {extraction.id}", missing))
    prepared = PredictionInputs(
        artifact=artifacts.read(session, model),
        kind=model.kind,
        positive_class=model.positive_class,
        features=features[columns] if columns else features,
        outcome=None,
        label_category_id=None,
        validation="",
    )
    _add_validation(session, prepared, model, extraction, patients)
    return prepared


def _add_validation(
    session: so.Session,
    prepared: PredictionInputs,
    model: TrainedModel,
    extraction: FeatureExtraction,
    patients: list[str],
) -> None:
    """Pick the labels that validate the predictions: the album's current outcome, if its
    kind is the model's. On the model's own album, the patients it was trained on are left
    out: metrics on them would not be a validation."""
    category = label_service.current(session, user_id=model.user_id, album_id=extraction.album_id)
    if category is None:
        prepared.validation = "No validation: the album has no current outcome"
        return
    if dataset.kind_of(category) != prepared.kind:
        prepared.validation = (
            f"No validation: the album's current outcome {category.name!r} is "
            f"{dataset.kind_of(category)}, the model is {prepared.kind}"
        )
        return
    labels = dataset.stored_labels(session, category)
    trained_on = (
        set(model.training_patient_ids or []) if extraction.album_id == model.album_id else set()
    )
    labelled = [p for p in patients if p in labels.patients]
    prepared.excluded = {p: "used to train this model" for p in labelled if p in trained_on}
    used = [p for p in labelled if p not in trained_on]
    if not used:
        prepared.validation = (
            f"No validation: every patient labelled in {category.name!r} was used to train "
            "the model"
            if labelled
            else f"No validation: no patient of the extraction is labelled in {category.name!r}"
        )
        return
    prepared.outcome = labels.frame(used)
    prepared.label_category_id = category.id
    prepared.validation = f"External validation against the outcome {category.name!r}"


def progress(session: so.Session, *, prediction_id: int, phase: str) -> Prediction | None:
    """Record the phase of a running prediction."""
    row = lifecycle.running(session, PREDICTION, prediction_id)
    if row is None:
        return None
    row.status = "PROGRESS"
    row.phase = phase
    session.flush()
    return row


def complete(
    session: so.Session,
    *,
    prediction_id: int,
    prepared: PredictionInputs,
    predictions: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    metrics: dict[str, Any] | None,
) -> Prediction | None:
    """Store the result and end the prediction; None when it ended elsewhere or is gone."""
    row = lifecycle.running(session, PREDICTION, prediction_id, lock=True)
    if row is None:
        return None
    validated = [] if prepared.outcome is None else [str(p) for p in prepared.outcome.index]
    n_labelled = sum(p in predictions for p in validated) if metrics is not None else 0
    row.predictions = [
        {"patient_id": str(patient), **flows.plain(item)}
        for patient, item in sorted(predictions.items())
    ]
    row.skipped = {str(k): str(v) for k, v in skipped.items()}
    row.excluded_from_metrics = prepared.excluded
    row.metrics = flows.plain(metrics)
    row.n_labelled = n_labelled
    row.label_category_id = prepared.label_category_id if metrics is not None else None
    row.validation = _validation_text(prepared, metrics, n_labelled)
    return lifecycle.succeed(session, PREDICTION, row)


def _validation_text(prepared: PredictionInputs, metrics: Any, n_labelled: int) -> str:
    """Say what the metrics are: external validation on how many patients, or why none."""
    if prepared.outcome is None:
        return prepared.validation
    if metrics is None:
        return "No validation: no labelled patient could be predicted"
    left_out = len(prepared.excluded)
    note = f"; {left_out} patients the model was trained on left out" if left_out else ""
    return f"{prepared.validation}: {n_labelled} labelled patients{note}"


# --- events -------------------------------------------------------------------------------------


def publish(row: Prediction | PredictionJob, **payload: Any) -> None:
    """Send a `prediction-status` event to the prediction's owner only."""
    prediction_id = row.prediction_id if isinstance(row, PredictionJob) else row.id
    model_id = row.model_id
    body = {"prediction-id": prediction_id, "model_id": model_id, **payload}
    events.publish(events.PREDICTION_STATUS, body, user_id=row.user_id)


def _announce(_session: so.Session, row: Prediction) -> None:
    """Publish a prediction's state: its whole result once done, its error once failed."""
    if row.status == "SUCCESS":
        body = to_read(row).model_dump(mode="json")
        publish(row, status=row.status, phase=row.phase, complete=True, prediction=body)
    elif row.status == "FAILURE":
        error = row.error or "Prediction failed"
        publish(row, status=row.status, phase=row.phase, failed=True, error=error)
    elif row.status == lifecycle.PENDING:  # sent again after its message was lost
        publish(row, status=row.status, phase=row.phase, requeued=True)
    else:
        publish(row, status=row.status, phase=row.phase)


PREDICTION = lifecycle.Kind(
    name="prediction",
    table=Prediction,
    task=jobs.PREDICT,
    id_prefix="prediction",
    lost_message=LOST_MESSAGE,
    queue_lost_message=QUEUE_LOST_MESSAGE,
    announce=_announce,
    on_start=lifecycle.phase("loading"),
    on_success=lifecycle.phase("complete"),
    on_failure=lifecycle.phase("failed"),
    beats=True,
)
