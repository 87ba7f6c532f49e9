"""The Celery application of the workers: configuration from shared settings, task modules.

Run: `celery -A workers.celery_app worker -Q extraction` (and `-Q training`).
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_process_init

from shared import events, jobs
from shared.config import get_settings
from shared.db import session as db_session

log = logging.getLogger(__name__)

app = Celery("quantimage2", include=["workers.extraction.tasks", "workers.training.tasks"])
app.config_from_object(jobs.celery_config(get_settings()))


@worker_process_init.connect
def _after_fork(**_kwargs: object) -> None:
    """A forked child must not reuse the parent's pooled MySQL or Redis connections."""
    db_session.dispose()
    events.reset()
