"""The one place where a study's end is announced and an extraction is finished.

Whatever ended the last study (success, failure, a redelivery refused by its claim, a sweep,
a cancel), the extraction is finished here: `finished_at` is
stamped, the worker credential dropped, the change committed, then the final events published.
The functions without a session open their own unit of work, so callers need none. The studies
a dead worker held are found and sent again here too (the orphan sweep).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared import jobs, lifecycle
from shared.db.retry import retry_transient
from shared.db.session import session_scope
from shared.extractions import notify
from shared.extractions.models import ExtractionTask, FeatureExtraction
from shared.extractions.service import celery_task_id, drop_credential, mark_finished

log = logging.getLogger(__name__)

REQUEUED_MESSAGE = "Waiting to start again (its worker stopped)"


def announce_studies(task_row_ids: Iterable[int]) -> None:
    """Publish the current state of studies that ended outside a running task."""
    ids = list(task_row_ids)
    retry_transient(lambda: _announce(ids), what="announce studies")


def _announce(task_row_ids: list[int]) -> None:
    """Publish each study's state in one unit of work."""
    with session_scope() as session:
        for task_row_id in task_row_ids:
            task = session.get(ExtractionTask, task_row_id)
            if task is not None:
                notify.study_changed(session, task, task.extraction.user_id)


def finish(extraction_id: int) -> bool:
    """Finish the extraction if every study ended; return True when this call finished it.

    Idempotent: the row lock in `finish_if_done` lets one caller win; the others see
    `finished_at` set and do nothing, so the final event goes out once.
    """
    return retry_transient(
        lambda: _finish(extraction_id), what=f"finish extraction {extraction_id}"
    )


def _finish(extraction_id: int) -> bool:
    """Finish and announce in one unit of work."""
    with session_scope() as session:
        extraction = finish_if_done(session, extraction_id=extraction_id)
        if extraction is None:
            return False
        session.commit()
        log.info("extraction %s finished", extraction_id)
        notify.extraction_finished(session, extraction)
        return True


def finish_all(extraction_ids: Iterable[int]) -> list[int]:
    """Finish each extraction that can be; return those this call finished."""
    return [extraction_id for extraction_id in sorted(set(extraction_ids)) if finish(extraction_id)]


def orphan_candidates(held: set[str]) -> list[int]:
    """Return the studies an orphan sweep must look at (see `candidates_of_orphans`)."""
    return retry_transient(lambda: _candidates(held), what="list orphan candidates")


def _candidates(held: set[str]) -> list[int]:
    """Read the candidates in one unit of work."""
    with session_scope() as session:
        return candidates_of_orphans(session, held=held)


def requeue_orphans(candidates: list[int], live: set[str]) -> list[int]:
    """Send again the candidate studies whose message no live worker holds; return their ids.

    Each row is locked while its message is sent, so two workers sweeping at once re-queue a
    study once; the message goes out before the commit, so a broker error changes nothing.
    """
    requeued = []
    for task_row_id in candidates:
        with session_scope() as session:
            task = requeue_orphan(session, task_row_id=task_row_id, live=live)
            if task is None:
                continue
            jobs.send(jobs.EXTRACT_STUDY, task.id, task_id=task.task_id)
            session.commit()
            requeued.append(task_row_id)
    if requeued:
        log.warning("re-queued %d studies whose worker stopped: %s", len(requeued), requeued)
        announce_studies(requeued)
    return requeued


# --- session functions (flush, never commit) ----------------------------------------------------


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


def candidates_of_orphans(session: so.Session, *, held: set[str]) -> list[int]:
    """Return the studies marked running, and the PENDING ones whose message the broker
    handed out (`held`: Celery ids delivered and not acknowledged)."""
    running = ExtractionTask.status.in_(lifecycle.RUNNING)
    pending_held = sa.and_(
        ExtractionTask.status == lifecycle.PENDING, ExtractionTask.task_id.in_(held)
    )
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
    if task is None or task.task_id in live:
        return None
    if task.status not in (*lifecycle.RUNNING, lifecycle.PENDING):
        return None
    if task.status in lifecycle.RUNNING:
        task.status = lifecycle.PENDING
        task.status_message = REQUEUED_MESSAGE
    task.task_id = celery_task_id(task.id)
    session.flush()
    return task
