"""Trained-model rules for the web edge: start a training run, list, read and delete models."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared import lifecycle
from shared.collections import service as collection_service
from shared.db import owned
from shared.errors import InvalidInput
from shared.extractions import service as extraction_service
from shared.labels import service as label_service
from shared.labels.models import LabelCategory
from shared.modeling import dataset, grids, runs
from shared.modeling.models import TrainedModel, TrainingRun
from shared.modeling.plan import TrainingInputError, plan
from shared.modeling.schemas import TrainRequest

log = logging.getLogger(__name__)


def list_for_album(session: so.Session, *, user_id: str, album_id: str) -> list[TrainedModel]:
    """Return the user's models of an album, all extractions, oldest first."""
    query = (
        sa.select(TrainedModel)
        .where(TrainedModel.user_id == user_id, TrainedModel.album_id == album_id)
        .order_by(TrainedModel.id)
    )
    return list(session.scalars(query))


def get_owned(session: so.Session, *, user_id: str, model_id: int) -> TrainedModel:
    """Return the caller's model; another user's answers exactly like a missing one."""
    return owned.get_owned(
        session, TrainedModel, model_id, user_id=user_id, missing="Model not found"
    )


def delete(session: so.Session, *, model: TrainedModel) -> None:
    """Delete a model row; its stored pipeline goes in the same transaction (cascade)."""
    session.delete(model)
    session.flush()


@dataclass(frozen=True)
class Split:
    """The patients of a training request, resolved against the platform's own rows."""

    training: list[str]
    test: list[str] | None
    left_out: list[str]  # requested patients without a usable label


def resolve_split(
    body: TrainRequest, labels: dataset.StoredLabels, extracted: set[str], stored: object
) -> Split:
    """Pick the training and test patients: extracted, labelled, in the request's split.

    Without patient lists in the request, the extraction's or collection's stored split is
    used, else every extracted patient (full dataset).
    """
    training = body.training_patients or getattr(stored, "training_patients", None)
    test = body.test_patients or getattr(stored, "test_patients", None)
    if body.data_splitting_type == "fulldataset":
        pool = set(training or []) | set(test or []) or set(extracted)
        wanted, wanted_test = sorted(pool & extracted), None
    else:
        if not training and not test:
            raise InvalidInput("Train/test training needs the training and test patients")
        wanted = sorted(set(training or []) & extracted)
        wanted_test = sorted((set(test or []) & extracted) - set(wanted))
    labelled = labels.patients
    left_out = sorted(p for p in [*wanted, *(wanted_test or [])] if p not in labelled)
    train_ids = [p for p in wanted if p in labelled]
    test_ids = None if wanted_test is None else [p for p in wanted_test if p in labelled]
    if test_ids is not None and not test_ids:
        raise InvalidInput("No test patient has both features and a label")
    return Split(train_ids, test_ids, left_out)


def start_training(
    session: so.Session, *, user_id: str, album_id: str, body: TrainRequest
) -> TrainingRun:
    """Validate a training request and create its run (the caller commits, then enqueues)."""
    extraction = extraction_service.get_owned(
        session, user_id=user_id, extraction_id=body.extraction_id
    )
    if extraction.album_id != album_id:
        raise InvalidInput(f"Extraction {extraction.id} is not of album {album_id!r}")
    collection = None
    if body.collection_id is not None:
        collection = collection_service.get_owned(
            session, user_id=user_id, collection_id=body.collection_id
        )
        if collection.feature_extraction_id != extraction.id:
            raise InvalidInput(f"Collection {collection.id} is not of extraction {extraction.id}")
    category = label_service.get_owned(session, user_id=user_id, category_id=body.label_category_id)
    if category.album_id != album_id:
        raise InvalidInput(f"Outcome {category.id} is not of album {album_id!r}")
    labels = dataset.stored_labels(session, category)
    unknown = grids.unknown_algorithms(labels.kind, body.algorithms or ())
    if unknown:
        raise InvalidInput(f"Unknown {labels.kind} algorithm(s): {', '.join(unknown)}")
    split = resolve_split(
        body, labels, dataset.extracted_patients(session, extraction.id), collection or extraction
    )
    try:
        steps = plan(labels.kind, body.data_splitting_type, labels.outcome_of(split.training))
    except TrainingInputError as exc:
        raise InvalidInput(str(exc)) from exc
    run = TrainingRun(
        user_id=user_id,
        album_id=album_id,
        training_id="pending",
        status="PENDING",
        phase="pending",
        total_steps=steps.n_steps,
        feature_extraction_id=extraction.id,
        feature_collection_id=collection.id if collection else None,
        label_category_id=category.id,
        parameters={
            "kind": labels.kind,
            "data_splitting_type": body.data_splitting_type,
            "train_test_split_type": body.train_test_split_type,
            "training_patients": split.training,
            "test_patients": split.test,
            "left_out_patients": split.left_out,
            "positive_class": _positive_class(category, labels),
            "feature_ids": list(collection.feature_ids) if collection else None,
            "algorithms": body.algorithms,
            "n_steps": steps.n_steps,
            "notes": list(steps.notes),
        },
    )
    session.add(run)
    session.flush()
    suffix = f"_{collection.id}" if collection else ""
    run.training_id = f"train_{extraction.id}{suffix}_{run.id}"
    run.task_id = runs.TRAINING.task_id(run)  # the Celery id its message will carry
    session.flush()
    return run


def _positive_class(category: LabelCategory, labels: dataset.StoredLabels) -> str | None:
    """Return the outcome's positive class when it names one of the labels."""
    if labels.kind != dataset.CLASSIFICATION or not category.pos_label:
        return None
    positive = dataset.class_label(category.pos_label)
    return positive if positive in set(labels.classes.values()) else None


def enqueue(session: so.Session, *, run: TrainingRun) -> None:
    """Queue the run (its row id only); if the broker is down, fail it and say so (503)."""
    lifecycle.enqueue(session, runs.TRAINING, [run])
