"""Extraction rules for the workers: claim a study, record progress, finish, fail, recover.

Every function takes a session and never commits; the task commits after each step so the
row (the truth) is visible to the web app while the study runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.orm.exc import StaleDataError

from shared.db.base import utcnow
from shared.extractions.models import ExtractionTask, FeatureExtraction, WorkerCredential
from shared.extractions.service import celery_task_id, drop_credential, mark_finished

MAX_ATTEMPTS = 2
TOTAL_STEPS = 2
RUNNING = ("STARTED", "PROGRESS")
LOST_MESSAGE = "The worker processing this study stopped unexpectedly"
REQUEUED_MESSAGE = "Waiting to start again (its worker stopped)"


@dataclass(frozen=True)
class StudyJob:
    """Plain inputs of one study's work (no ORM objects outlive the session)."""

    task_row_id: int
    extraction_id: int
    user_id: str
    album_id: str
    study_uid: str
    config_yaml: str
    rois: list[str]
    credential: str | None
    attempt: int


@dataclass(frozen=True)
class Refused:
    """A claim that runs nothing although the row exists (its extraction may need finishing)."""

    task_row_id: int
    extraction_id: int
    failed_now: bool  # True when this claim failed the study (one attempt too many)


def claim(
    session: so.Session, *, task_row_id: int, celery_id: str | None, worker: str | None = None
) -> StudyJob | Refused | None:
    """Mark a task STARTED and return its inputs; Refused when it ended; None when cancelled.

    A task claimed again after a crash (late ack redelivery) counts an attempt; past
    MAX_ATTEMPTS it is failed instead of being run forever. A refusal still names the
    extraction: the crash may have come between the study's end and the extraction's.
    """
    task = session.get(ExtractionTask, task_row_id, with_for_update=True)
    if task is None:
        return None
    if task.status in ("SUCCESS", "FAILURE") or _superseded(task, celery_id):
        return Refused(task.id, task.feature_extraction_id, failed_now=False)
    if task.attempts >= MAX_ATTEMPTS:
        fail(session, task=task, message=f"{LOST_MESSAGE} ({task.attempts} attempts)")
        return Refused(task.id, task.feature_extraction_id, failed_now=True)
    extraction = task.extraction
    task.attempts += 1
    task.status = "STARTED"
    task.task_id = celery_id or task.task_id
    task.worker = worker
    task.started_at = utcnow()
    task.error = None
    session.flush()
    return StudyJob(
        task_row_id=task.id,
        extraction_id=extraction.id,
        user_id=extraction.user_id,
        album_id=extraction.album_id,
        study_uid=task.study_uid,
        config_yaml=extraction.config_yaml,
        rois=list(extraction.rois),
        credential=_credential(session, extraction),
        attempt=task.attempts,
    )


def _superseded(task: ExtractionTask, celery_id: str | None) -> bool:
    """Tell whether another message (a re-queued copy) is running this study right now.

    A study re-queued after its worker died gets a new Celery id; the dead worker's message,
    handed out again by the broker much later, must not count an attempt against it.
    """
    return bool(task.status in RUNNING and task.task_id and celery_id and task.task_id != celery_id)


def _credential(session: so.Session, extraction: FeatureExtraction) -> str | None:
    """Look up the stored credential of an extraction, if it has one and it is valid."""
    if extraction.credential_id is None:
        return None
    credential = session.get(WorkerCredential, extraction.credential_id)
    if credential is None or credential.expires_at <= utcnow():
        return None
    return credential.secret


def progress(
    session: so.Session, *, task_row_id: int, step: int, message: str
) -> ExtractionTask | None:
    """Record a step; None when the extraction was cancelled meanwhile (the caller then rolls
    its unit of work back)."""
    task = session.get(ExtractionTask, task_row_id)
    if task is None:
        return None
    task.status = "PROGRESS"
    task.current_step = step
    task.total_steps = TOTAL_STEPS
    task.status_message = message
    try:
        session.flush()
    except StaleDataError:  # a cancel deleted the row after it was read (./qi2 fuzz)
        return None
    return task


def succeed(
    session: so.Session, *, task_row_id: int, patient_id: str | None, warnings: list[str]
) -> ExtractionTask | None:
    """Mark a study done (its vectors were stored in the same transaction)."""
    task = session.get(ExtractionTask, task_row_id)
    if task is None:
        return None
    task.status = "SUCCESS"
    task.current_step = task.total_steps = TOTAL_STEPS
    task.status_message = "Extraction Complete"
    task.patient_id = patient_id or task.patient_id
    task.warnings = warnings or None
    task.finished_at = utcnow()
    session.flush()
    return task


def fail(session: so.Session, *, task: ExtractionTask, message: str) -> ExtractionTask:
    """Mark a study failed with a readable message."""
    task.status = "FAILURE"
    task.status_message = "Failure"
    task.error = message[:4000]
    task.finished_at = utcnow()
    session.flush()
    return task


def fail_by_id(session: so.Session, *, task_row_id: int, message: str) -> ExtractionTask | None:
    """Mark a study failed, if it still exists."""
    task = session.get(ExtractionTask, task_row_id)
    return None if task is None else fail(session, task=task, message=message)


def finish_if_done(session: so.Session, *, extraction_id: int) -> FeatureExtraction | None:
    """Return the extraction when this call marked it finished (all studies ended)."""
    extraction = session.get(FeatureExtraction, extraction_id, with_for_update=True)
    if extraction is None:
        return None
    session.refresh(extraction, attribute_names=["tasks"])
    if not mark_finished(extraction):
        return None
    drop_credential(session, extraction)
    session.flush()
    return extraction


def fail_stale(session: so.Session, *, older_than: dt.timedelta) -> list[ExtractionTask]:
    """Fail tasks that claim to run but have not reported for longer than any task may run.

    This is the backstop for a whole worker killed hard (its late-acked message would come
    back only after the broker's visibility timeout).
    """
    cutoff = utcnow() - older_than
    stale = session.scalars(
        sa.select(ExtractionTask).where(
            ExtractionTask.status.in_(RUNNING),
            ExtractionTask.updated_at < cutoff,
        )
    ).all()
    for task in stale:
        fail(session, task=task, message=LOST_MESSAGE)
    return list(stale)


def orphan_candidates(session: so.Session, *, held: set[str]) -> list[int]:
    """Return the studies marked running, and the PENDING ones whose message the broker
    handed out (`held`: Celery ids delivered and not acknowledged)."""
    running = ExtractionTask.status.in_(RUNNING)
    pending_held = sa.and_(ExtractionTask.status == "PENDING", ExtractionTask.task_id.in_(held))
    query = sa.select(ExtractionTask.id).where(sa.or_(running, pending_held) if held else running)
    return list(session.scalars(query.order_by(ExtractionTask.id)))


def requeue_orphan(
    session: so.Session, *, task_row_id: int, live: set[str]
) -> ExtractionTask | None:
    """Send a study again under a new Celery id when no live worker holds its message.

    `live` (the Celery ids live workers execute or hold reserved) must be read after the
    candidates were: a task is listed before it claims its row, so a live study is in it.
    A running study goes back to PENDING (its crash counted as an attempt when it was
    claimed); a PENDING one whose message a dead worker held stays PENDING. Returns the row.
    """
    task = session.get(ExtractionTask, task_row_id, with_for_update=True)
    if task is None or task.status not in (*RUNNING, "PENDING") or task.task_id in live:
        return None
    if task.status in RUNNING:
        task.status = "PENDING"
        task.status_message = REQUEUED_MESSAGE
    task.task_id = celery_task_id(task.id)
    session.flush()
    return task


def study_event(task: ExtractionTask) -> dict[str, Any]:
    """Build the `feature-status` payload of a task."""
    if task.status == "FAILURE":
        message = task.error or "Failure"
    elif task.status == "SUCCESS":
        message = "Extraction Complete"
    else:
        message = f"{task.current_step}/{task.total_steps} - {task.status_message}"
    return {
        "task_id": task.task_id,
        "feature_extraction_task_id": task.id,
        "status": task.status,
        "status_message": message,
    }
