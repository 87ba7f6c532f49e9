"""The extraction study as a job of the common lifecycle (shared/lifecycle.py): its kind,
its inputs, its steps and its end.

Every function takes a session and never commits; the task commits after each step so the
row (the truth) is visible to the web app while the study runs. Claiming, failing and the
sweeps are the lifecycle's, with `STUDY`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy.orm as so
from sqlalchemy.orm.exc import StaleDataError

from shared import jobs, lifecycle
from shared.db.base import utcnow
from shared.extractions import completion, notify
from shared.extractions.models import ExtractionTask, FeatureExtraction, WorkerCredential

TOTAL_STEPS = 2
LOST_MESSAGE = "The worker processing this study stopped unexpectedly"
QUEUE_LOST_MESSAGE = (
    "This study never reached a worker: the task queue lost its message, also when it was "
    "sent again. Extract the album again."
)


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


def study_job(session: so.Session, task: ExtractionTask) -> StudyJob:
    """Read the inputs of a claimed study."""
    extraction = task.extraction
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
    task.patient_id = patient_id or task.patient_id
    task.warnings = warnings or None
    return lifecycle.succeed(session, STUDY, task)


def _succeeded(task: ExtractionTask) -> None:
    """Set a finished study's own fields."""
    task.current_step = task.total_steps = TOTAL_STEPS
    task.status_message = "Extraction Complete"


def _failed(task: ExtractionTask) -> None:
    """Set a failed study's own fields (its readable error is the lifecycle's)."""
    task.status_message = "Failure"


def _announce(session: so.Session, task: ExtractionTask) -> None:
    """Publish a study's state; a claimed study is announced by its first step."""
    if task.status != "STARTED":
        notify.study_changed(session, task, task.extraction.user_id)


STUDY = lifecycle.Kind(
    name="study",
    table=ExtractionTask,
    task=jobs.EXTRACT_STUDY,
    id_prefix="qi2-study",
    lost_message=LOST_MESSAGE,
    queue_lost_message=QUEUE_LOST_MESSAGE,
    announce=_announce,
    on_success=_succeeded,
    on_failure=_failed,
    # A study is safe to run again: the orphan sweep sends a lost worker's studies again.
    fails_orphans=False,
    parent_of=lambda task: task.feature_extraction_id,
    finish_parents=completion.finish_all,
)
