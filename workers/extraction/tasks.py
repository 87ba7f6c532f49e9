"""Celery edge of the extraction: claim the study, fetch, compute, store, notify.

The session is closed during download and compute (no MySQL connection held for minutes);
every state change is committed to the task row before the matching event is published.
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy.orm as so
from celery.exceptions import SoftTimeLimitExceeded

from shared import jobs, lifecycle, runtime
from shared.errors import DomainError, NotFound
from shared.extractions import completion, runs
from shared.extractions.models import ExtractionTask
from shared.features import storage
from shared.imaging.factory import image_source
from shared.imaging.source import CONTOUR_MODALITIES, ImageSource
from shared.presets.config_schema import ExtractionConfig, parse_yaml, validate_config
from workers.celery_app import SCRATCH_PREFIX, app
from workers.extraction import pipeline

log = logging.getLogger(__name__)
FETCH_THREADS = 4


class Cancelled(Exception):
    """The extraction was cancelled while this study ran."""


# Time limits: workers.celery_app.task_limits, from the worker's settings.
@app.task(name=jobs.EXTRACT_STUDY, bind=True)
def extract_study(self, task_row_id: int) -> str:
    """Extract the features of one study of an extraction."""
    claimed = lifecycle.start(runs.STUDY, task_row_id, self.request, job=runs.study_job)
    if claimed is None:
        log.info("task %s: nothing to do (cancelled)", task_row_id)
        return "skipped"
    if isinstance(claimed, lifecycle.Refused):
        log.info("task %s: not run (ended, superseded or out of attempts)", task_row_id)
        # The crash may have come between the study's end and the extraction's.
        completion.finish(claimed.parent_id)
        return "failure" if claimed.failed_now else "skipped"
    try:
        return _attempt(claimed)
    finally:
        # Every path that may have ended the last study finishes the extraction here.
        completion.finish(claimed.extraction_id)


def _attempt(job: runs.StudyJob) -> str:
    """Run one claimed study; record a failure with its readable message."""
    log.info("task %s: study %s, attempt %d", job.task_row_id, job.study_uid, job.attempt)
    try:
        _run(job)
        return "success"
    except Cancelled:
        log.info("task %s: extraction cancelled", job.task_row_id)
        return "cancelled"
    except (pipeline.ExtractionError, DomainError) as exc:
        _fail(job, str(exc))
    except SoftTimeLimitExceeded:
        limit = runtime.current().settings.extraction_task_time_limit
        _fail(job, f"The study took longer than {limit} s")
    except Exception as exc:  # record it on the row; the rest of the album goes on
        log.exception("task %s: unexpected error", job.task_row_id)
        _fail(job, f"Unexpected error while processing the study: {type(exc).__name__}: {exc}")
    return "failure"


def _run(job: runs.StudyJob) -> None:
    """Fetch only the needed series, extract, store the vectors and mark the study done."""
    config = validate_config(parse_yaml(job.config_yaml))
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{job.task_row_id}-") as tmp:
        _step(job, 1, "Fetching DICOM files")
        study_dir = _fetch(job, config, Path(tmp))
        _step(job, 2, "Processing data")
        result = pipeline.extract_study(study_dir, config, job.rois)
    # Storing is idempotent (a study's vectors are replaced), so a database restart while
    # storing costs a retry, not the computed study.
    lifecycle.change(
        runs.STUDY, job.task_row_id, lambda session: _store(session, job, result), what="store"
    )


def _store(
    session: so.Session, job: runs.StudyJob, result: pipeline.StudyExtraction
) -> ExtractionTask | None:
    """Store the study's vectors and mark it done, in the caller's one transaction."""
    vectors = [
        storage.VectorIn(modality=v.modality, roi=v.roi, names=v.names, values=v.values)
        for v in result.vectors
    ]
    if runs.progress(session, task_row_id=job.task_row_id, step=2, message="Storing") is None:
        raise Cancelled
    try:
        storage.store_study_vectors(
            session, extraction_id=job.extraction_id, task_id=job.task_row_id, vectors=vectors
        )
    except NotFound as exc:  # the task row was deleted: the extraction was cancelled
        raise Cancelled from exc
    return runs.succeed(
        session, task_row_id=job.task_row_id, patient_id=result.patient_id, warnings=result.warnings
    )


def _fetch(job: runs.StudyJob, config: ExtractionConfig, dest: Path) -> Path:
    """Download the study's contours, then only the image series the chosen ROIs need."""
    source = image_source(runtime.current().settings, credential=job.credential)
    series = source.list_series(job.album_id, job.study_uid)
    contours = [s.series_uid for s in series if s.modality in CONTOUR_MODALITIES]
    if not contours:
        raise pipeline.ExtractionError("The study has no RTSTRUCT or SEG series (no contours)")
    contour_files = _download(source, job, contours, dest)
    needed = pipeline.plan_series(contour_files, series, config, job.rois)
    _download(source, job, sorted(needed), dest)
    return dest


def _download(source: ImageSource, job: runs.StudyJob, uids: list[str], dest: Path) -> list[Path]:
    """Fetch several series at once: the server converts one while we receive another."""
    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        batches = pool.map(
            lambda uid: source.download_series(job.album_id, job.study_uid, uid, dest / uid), uids
        )
        return [path for batch in batches for path in batch]


def _step(job: runs.StudyJob, step: int, message: str) -> None:
    """Record and announce a step; stop when the extraction was cancelled."""
    recorded = lifecycle.change(
        runs.STUDY,
        job.task_row_id,
        lambda session: runs.progress(
            session, task_row_id=job.task_row_id, step=step, message=message
        ),
        what="step",
    )
    if not recorded:
        raise Cancelled


def _fail(job: runs.StudyJob, message: str) -> None:
    """Record a failed study with its readable message, and announce it."""
    lifecycle.fail_job(runs.STUDY, job.task_row_id, message)
