"""Extraction rules for the web edge: create, read, split, status, cancel.

Status is computed from the task rows alone (no Redis), so it survives a broker outage.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db import owned
from shared.db.base import utcnow
from shared.db.wire import iso_text
from shared.errors import Conflict
from shared.extractions.models import (
    ExtractionTask,
    FeatureExtraction,
    FeatureNameSet,
    FeatureVector,
    WorkerCredential,
)
from shared.extractions.schemas import (
    ExtractionRead,
    ExtractionStatus,
    ExtractionUpdate,
    FormattedTask,
    RawTask,
)
from shared.imaging.source import StudyInfo
from shared.lru import BoundedLru

DONE = ("SUCCESS", "FAILURE")


def celery_task_id(task_row_id: int) -> str:
    """Return a fresh Celery id for a task row (stored before queueing, so it can be revoked)."""
    return f"qi2-study-{task_row_id}-{uuid.uuid4().hex[:12]}"


def largest_first(studies: Sequence[StudyInfo]) -> list[StudyInfo]:
    """Order studies by instance count, descending; unknown counts last, ties in album order."""
    return sorted(studies, key=lambda study: -(study.instance_count or 0))


def get_owned(session: so.Session, *, user_id: str, extraction_id: int) -> FeatureExtraction:
    """Return the caller's extraction; another user's answers exactly like a missing one."""
    return owned.get_owned(
        session,
        FeatureExtraction,
        extraction_id,
        user_id=user_id,
        missing="Feature extraction not found",
    )


def latest_for_album(
    session: so.Session, *, user_id: str, album_id: str
) -> FeatureExtraction | None:
    """Return the user's most recent extraction of an album (highest id), if any."""
    query = (
        sa.select(FeatureExtraction)
        .where(FeatureExtraction.user_id == user_id, FeatureExtraction.album_id == album_id)
        .order_by(FeatureExtraction.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def previous_for_album(
    session: so.Session, *, extraction: FeatureExtraction
) -> FeatureExtraction | None:
    """Return the same user's extraction of the same album just before this one."""
    query = (
        sa.select(FeatureExtraction)
        .where(
            FeatureExtraction.user_id == extraction.user_id,
            FeatureExtraction.album_id == extraction.album_id,
            FeatureExtraction.id < extraction.id,
        )
        .order_by(FeatureExtraction.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def create(
    session: so.Session,
    *,
    user_id: str,
    album_id: str,
    album_name: str,
    config_yaml: str,
    rois: Sequence[str],
    studies: Sequence[StudyInfo],
    credential_id: int | None = None,
) -> FeatureExtraction:
    """Create an extraction with one PENDING task per study, largest study first.

    Tasks are queued in row order; starting the biggest studies first keeps the album's
    last minutes from being one long study on one worker while the others idle.
    """
    extraction = FeatureExtraction(
        user_id=user_id,
        album_id=album_id,
        album_name=album_name,
        config_yaml=config_yaml,
        rois=list(rois),
        result_id=uuid.uuid4().hex,
        credential_id=credential_id,
    )
    session.add(extraction)
    session.flush()
    for study in largest_first(studies):
        task = ExtractionTask(
            feature_extraction_id=extraction.id,
            study_uid=study.study_uid,
            patient_id=study.patient_id,
        )
        extraction.tasks.append(task)
    session.flush()
    for task in extraction.tasks:
        task.task_id = celery_task_id(task.id)
    session.flush()
    return extraction


def update_split(
    session: so.Session, *, extraction: FeatureExtraction, changes: ExtractionUpdate
) -> FeatureExtraction:
    """Apply the split fields present in the request (null clears the patient lists)."""
    for name in changes.model_fields_set:
        value = getattr(changes, name)
        if value is None and name in ("data_splitting_type", "train_test_split_type"):
            continue  # these columns always hold one of their values
        setattr(extraction, name, value)
    session.flush()
    return extraction


class TaskState(Protocol):
    """What the status counters read of a task (an ORM row or a lean query row)."""

    status: str
    study_uid: str
    error: str | None
    status_message: str


def compute_status(extraction: FeatureExtraction) -> ExtractionStatus:
    """Count the task states; an extraction is ready when every study ended."""
    return status_of(extraction.tasks, has_result=bool(extraction.result_id))


def status_of(tasks: Sequence[TaskState], *, has_result: bool) -> ExtractionStatus:
    """Count the task states of an extraction (its errors only once it has a result id)."""
    succeeded = sum(t.status == "SUCCESS" for t in tasks)
    failed = [t for t in tasks if t.status == "FAILURE"]
    pending = sum(t.status == "PENDING" for t in tasks)
    ready = succeeded + len(failed) == len(tasks)
    errors = {t.study_uid: [t.error or t.status_message] for t in failed}
    return ExtractionStatus(
        ready=ready,
        successful=ready and not failed,
        failed=bool(failed),
        total_tasks=len(tasks),
        pending_tasks=pending,
        completed_tasks=succeeded,
        failed_tasks=len(failed),
        errors=errors if has_result else None,
    )


def stored_summary(
    session: so.Session, *, extraction_id: int
) -> tuple[list[str], list[str], list[str]]:
    """Return the modalities, ROIs and feature names actually stored for an extraction."""
    pairs = session.execute(
        sa.select(FeatureVector.modality, FeatureVector.roi, FeatureVector.name_set_id)
        .where(FeatureVector.feature_extraction_id == extraction_id)
        .distinct()
    ).all()
    name_set_ids = {row.name_set_id for row in pairs}
    names: set[str] = set()
    if name_set_ids:
        for text in session.scalars(
            sa.select(FeatureNameSet.names).where(FeatureNameSet.id.in_(name_set_ids))
        ):
            names.update(text.split("\n"))
    modalities = sorted({row.modality for row in pairs})
    rois = sorted({row.roi for row in pairs})
    return modalities, rois, sorted(names)


def to_read(
    session: so.Session, extraction: FeatureExtraction, *, formatted_tasks: bool
) -> ExtractionRead:
    """Build the wire shape: raw tasks (E1, E8) or formatted ones (E2, E3, E4)."""
    modalities, rois, names = stored_summary(session, extraction_id=extraction.id)
    tasks: list[RawTask] | list[FormattedTask]
    if formatted_tasks:
        tasks = [FormattedTask.from_row(t) for t in extraction.tasks]
    else:
        tasks = [RawTask.model_validate(t) for t in extraction.tasks]
    summary = (modalities, rois, names)
    return _extraction_read(extraction, summary, tasks, compute_status(extraction))


def _extraction_read(
    extraction: FeatureExtraction,
    summary: tuple[Sequence[str], Sequence[str], Sequence[str]],
    tasks: list[RawTask] | list[FormattedTask],
    status: ExtractionStatus,
) -> ExtractionRead:
    """The wire shape of an extraction from its row, stored summary, tasks and status."""
    modalities, rois, names = summary
    return ExtractionRead(
        id=extraction.id,
        created_at=extraction.created_at,
        updated_at=extraction.updated_at,
        user_id=extraction.user_id,
        album_id=extraction.album_id,
        feature_definitions=list(names),
        data_splitting_type=extraction.data_splitting_type,
        train_test_split_type=extraction.train_test_split_type,
        training_patients=extraction.training_patients,
        test_patients=extraction.test_patients,
        modalities=list(modalities),
        rois=list(rois) or list(extraction.rois),
        tasks=tasks,
        result_id=extraction.result_id,
        status=status,
    )


@dataclass(frozen=True)
class _FinalReads:
    """What E1 reads of an extraction besides its own row: its tasks and what it stored."""

    rows: tuple[Any, ...]
    modalities: list[str]
    rois: list[str]
    names: list[str]


# A finished extraction's tasks and vectors never change again (`runs.claim` refuses ended
# studies, `cancel` refuses finished extractions), so E1 reads them once per process. The key
# holds `created_at` and `finished_at` (microseconds): a row that is not finished is never
# looked up here, and a reused id (a restored database) is a new key.
_FINAL_READS: BoundedLru[tuple[int, dt.datetime, dt.datetime], _FinalReads] = BoundedLru(256)


def _read_tasks_and_summary(session: so.Session, extraction_id: int) -> _FinalReads:
    """Query E1's task columns (timestamps formatted by MariaDB) and the stored summary."""
    rows = session.execute(
        sa.select(
            ExtractionTask.id,
            iso_text(ExtractionTask.created_at).label("created_at"),
            iso_text(ExtractionTask.updated_at).label("updated_at"),
            ExtractionTask.study_uid,
            ExtractionTask.task_id,
            ExtractionTask.status,
            ExtractionTask.error,
            ExtractionTask.status_message,
        )
        .where(ExtractionTask.feature_extraction_id == extraction_id)
        .order_by(ExtractionTask.id)
    ).all()
    modalities, rois, names = stored_summary(session, extraction_id=extraction_id)
    return _FinalReads(tuple(rows), modalities, rois, names)


def _final_reads(session: so.Session, extraction: FeatureExtraction) -> _FinalReads:
    """Return E1's reads, from the process cache once the extraction has finished."""
    if extraction.finished_at is None:
        return _read_tasks_and_summary(session, extraction.id)
    key = (extraction.id, extraction.created_at, extraction.finished_at)
    reads = _FINAL_READS.get(key)
    if reads is None:
        reads = _read_tasks_and_summary(session, extraction.id)
        _FINAL_READS.put(key, reads)
    return reads


def to_raw_json(session: so.Session, extraction: FeatureExtraction) -> dict[str, Any]:
    """E1's JSON: `to_read(formatted_tasks=False)` dumped, built from a lean task query.

    The album's latest extraction is read on every page of the frontend; loading its hundreds
    of tasks as ORM rows and validating each through pydantic cost most of the request. The
    task dicts have exactly RawTask's fields; a test compares the two paths. A finished
    extraction's tasks and summary come from a process cache (`_final_reads`).
    """
    reads = _final_reads(session, extraction)
    status = status_of(reads.rows, has_result=bool(extraction.result_id))
    read = _extraction_read(extraction, (reads.modalities, reads.rois, reads.names), [], status)
    body = read.model_dump(mode="json", by_alias=True)
    body["tasks"] = [
        {
            "id": row.id,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "feature_extraction_id": extraction.id,
            "study_uid": row.study_uid,
            "task_id": row.task_id,
        }
        for row in reads.rows
    ]
    return body


def cancel(session: so.Session, *, extraction: FeatureExtraction) -> list[str]:
    """Delete a running extraction with its tasks and values; return the Celery ids to revoke.

    A finished extraction cannot be cancelled: that would silently delete its collections and
    models (a fault of the old backend).
    """
    if extraction.finished_at is not None or compute_status(extraction).ready:
        raise Conflict("This extraction has finished; there is nothing to cancel")
    task_ids = [t.task_id for t in extraction.tasks if t.task_id and t.status not in DONE]
    drop_credential(session, extraction)  # no study will need it; the FK would only be nulled
    session.delete(extraction)
    session.flush()
    return task_ids


def mark_finished(extraction: FeatureExtraction) -> bool:
    """Stamp `finished_at` once every study ended; return True when this call did it."""
    if extraction.finished_at is None and compute_status(extraction).ready:
        extraction.finished_at = utcnow()
        return True
    return False


def drop_credential(session: so.Session, extraction: FeatureExtraction) -> None:
    """Forget the stored worker credential once no study needs it any more."""
    if extraction.credential_id is not None:
        credential = session.get(WorkerCredential, extraction.credential_id)
        extraction.credential_id = None
        if credential is not None:
            session.delete(credential)
