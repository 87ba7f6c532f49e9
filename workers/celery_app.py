"""The Celery application of the workers: configuration from shared settings, task modules.

Run: `celery -A workers.celery_app worker -Q extraction` (and `-Q training`).
"""

from __future__ import annotations

import datetime as dt
import logging

from celery import Celery
from celery.signals import worker_process_init, worker_ready

from shared import events, jobs
from shared.config import get_settings
from shared.db import session as db_session
from shared.extractions import runs

log = logging.getLogger(__name__)

app = Celery("quantimage2", include=["workers.extraction.tasks", "workers.training.tasks"])
app.config_from_object(jobs.celery_config(get_settings()))


@worker_process_init.connect
def _after_fork(**_kwargs: object) -> None:
    """A forked child must not reuse the parent's pooled MySQL or Redis connections."""
    db_session.dispose()
    events.reset()


@worker_ready.connect
def _recover_lost_studies(**_kwargs: object) -> None:
    """Fail studies still marked running long after any task could have (a killed worker)."""
    limit = get_settings().extraction_task_time_limit + 600
    with db_session.session_scope() as session:
        extraction_ids = runs.fail_stale(session, older_than=dt.timedelta(seconds=limit))
        for extraction_id in set(extraction_ids):
            runs.finish_if_done(session, extraction_id=extraction_id)
    if extraction_ids:
        log.warning("failed %d studies left running by a lost worker", len(extraction_ids))
