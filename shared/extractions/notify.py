"""Progress notifications of extractions over Socket.IO (to the owner's room only).

Events are throttled: one `feature-status` per study step, and `extraction-status` (status
only) at most once a second per extraction unless a study just ended.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy.orm as so

from shared import events
from shared.extractions import service
from shared.extractions.models import ExtractionTask, FeatureExtraction

MIN_INTERVAL_SECONDS = 1.0
_last_sent: dict[int, float] = {}
_lock = threading.Lock()


def _due(extraction_id: int, *, force: bool) -> bool:
    """Tell whether a status-only event may go out now."""
    now = time.monotonic()
    with _lock:
        if not force and now - _last_sent.get(extraction_id, 0.0) < MIN_INTERVAL_SECONDS:
            return False
        _last_sent[extraction_id] = now
        return True


def study_changed(session: so.Session, task: ExtractionTask, user_id: str) -> None:
    """Publish `feature-status` for a study, then the extraction's status (throttled)."""
    events.publish(events.FEATURE_STATUS, study_event(task), user_id=user_id)
    ended = task.status in service.DONE
    if _due(task.feature_extraction_id, force=ended):
        extraction = session.get(FeatureExtraction, task.feature_extraction_id)
        if extraction is not None:
            status = service.compute_status(extraction)
            payload = {"feature_extraction_id": extraction.id, "status": status.model_dump()}
            events.publish(events.EXTRACTION_STATUS, payload, user_id=user_id)


def extraction_finished(session: so.Session, extraction: FeatureExtraction) -> None:
    """Publish the whole extraction (formatted tasks) once every study ended."""
    body = service.to_read(session, extraction, formatted_tasks=True)
    events.publish(
        events.EXTRACTION_STATUS,
        body.model_dump(mode="json", by_alias=True),
        user_id=extraction.user_id,
    )


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
