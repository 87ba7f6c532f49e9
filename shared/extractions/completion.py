"""The one place where a study's end is announced and an extraction is finished.

Whatever ended the last study (success, failure, a redelivery refused by `runs.claim`, the
start-up sweep of stale studies, a cancel), the extraction is finished here: `finished_at` is
stamped, the worker credential dropped, the change committed, then the final events published.
Each function opens its own unit of work, so callers need no session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from shared import jobs
from shared.db.retry import retry_transient
from shared.db.session import session_scope
from shared.extractions import notify, runs
from shared.extractions.models import ExtractionTask

log = logging.getLogger(__name__)


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

    Idempotent: the row lock in `runs.finish_if_done` lets one caller win; the others see
    `finished_at` set and do nothing, so the final event goes out once.
    """
    return retry_transient(
        lambda: _finish(extraction_id), what=f"finish extraction {extraction_id}"
    )


def _finish(extraction_id: int) -> bool:
    """Finish and announce in one unit of work."""
    with session_scope() as session:
        extraction = runs.finish_if_done(session, extraction_id=extraction_id)
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
    """Return the studies an orphan sweep must look at (see `runs.orphan_candidates`)."""
    return retry_transient(lambda: _candidates(held), what="list orphan candidates")


def _candidates(held: set[str]) -> list[int]:
    """Read the candidates in one unit of work."""
    with session_scope() as session:
        return runs.orphan_candidates(session, held=held)


def requeue_orphans(candidates: list[int], live: set[str]) -> list[int]:
    """Send again the candidate studies whose message no live worker holds; return their ids.

    Each row is locked while its message is sent, so two workers sweeping at once re-queue a
    study once; the message goes out before the commit, so a broker error changes nothing.
    """
    requeued = []
    for task_row_id in candidates:
        with session_scope() as session:
            task = runs.requeue_orphan(session, task_row_id=task_row_id, live=live)
            if task is None:
                continue
            jobs.send(jobs.EXTRACT_STUDY, task.id, task_id=task.task_id)
            session.commit()
            requeued.append(task_row_id)
    if requeued:
        log.warning("re-queued %d studies whose worker stopped: %s", len(requeued), requeued)
        announce_studies(requeued)
    return requeued
