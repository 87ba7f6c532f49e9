"""Stored rows that tests and benchmarks build alike: extractions with feature values, outcomes.

One builder per row kind, so a change to how the platform stores them is made once. Builders
flush and never commit (the caller's transaction decides).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy.orm as so

from shared.extractions import service as extraction_service
from shared.extractions.models import ExtractionTask, FeatureExtraction
from shared.features import storage
from shared.imaging.source import StudyInfo
from shared.labels.models import Label, LabelCategory

NAMES = ["original_firstorder_Mean", "original_glcm_Contrast"]


def new_extraction(
    session: so.Session,
    *,
    user_id: str = "user-bob",
    album_id: str = "album-1",
    patients: Sequence[str] = ("P0", "P1"),
    album_name: str = "Album 1",
    config_yaml: str = "{}\n",
    rois: Sequence[str] = ("GTV",),
    studies: Sequence[StudyInfo] | None = None,
    credential_id: int | None = None,
) -> FeatureExtraction:
    """An extraction with one PENDING task per patient (study UIDs 1.2.<i>), as E2 creates it."""
    return extraction_service.create(
        session,
        user_id=user_id,
        album_id=album_id,
        album_name=album_name,
        config_yaml=config_yaml,
        rois=list(rois),
        studies=studies or [StudyInfo(f"1.2.{i}", p) for i, p in enumerate(patients)],
        credential_id=credential_id,
    )


def store_vectors(
    session: so.Session,
    extraction: FeatureExtraction,
    vectors_of: Callable[[ExtractionTask], list[storage.VectorIn]],
    *,
    status: str = "SUCCESS",
) -> None:
    """Store each task's feature vectors as a worker would, and set the task's status."""
    for task in extraction.tasks:
        storage.store_study_vectors(
            session, extraction_id=extraction.id, task_id=task.id, vectors=vectors_of(task)
        )
        task.status = status
    session.flush()


def make_extraction(
    session: so.Session,
    user_id: str,
    album_id: str,
    patients: Sequence[str],
    *,
    names: Sequence[str] = NAMES,
    album_name: str = "My Album",
    seed: int = 1,
) -> FeatureExtraction:
    """A finished extraction with normal CT/GTV values of `names` for every patient."""
    extraction = new_extraction(
        session, user_id=user_id, album_id=album_id, patients=patients, album_name=album_name
    )
    rng = np.random.default_rng(seed)
    store_vectors(
        session,
        extraction,
        lambda _: [storage.VectorIn("CT", "GTV", list(names), rng.normal(size=len(names)))],
    )
    return extraction


def make_outcome(
    session: so.Session,
    user_id: str,
    album_id: str,
    labels: Mapping[str, str | Mapping[str, Any]],
    name: str = "Response",
    *,
    label_type: str = "Classification",
) -> LabelCategory:
    """An outcome with its labels: a text is a class (column Outcome), a dict the whole content."""
    category = LabelCategory(user_id=user_id, album_id=album_id, label_type=label_type, name=name)
    category.labels = [
        Label(patient_id=p, label_content=dict(v) if isinstance(v, Mapping) else {"Outcome": v})
        for p, v in labels.items()
    ]
    session.add(category)
    session.flush()
    return category
