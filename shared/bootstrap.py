"""Build a process's runtime from its settings (kept apart from `shared.runtime`, which the
builders' own modules import to find the current one)."""

from __future__ import annotations

import sqlalchemy as sa

# Every table on the metadata before any session: a mapper that names another domain's table
# (a training run's feature collection) is configured only once that table's model is loaded,
# and an edge must not depend on which modules its routes or tasks happen to import.
import shared.db.all_models  # noqa: F401
from shared import events, jobs
from shared.config import Settings
from shared.db import session as db_session
from shared.runtime import Runtime


def build(settings: Settings, *, engine: sa.Engine | None = None) -> Runtime:
    """Build the sessionmaker, the Celery client and the event publisher from settings."""
    if engine is None:
        engine = db_session.make_engine(
            settings.sqlalchemy_url, pool_size=settings.db_pool_size, tls=settings.db_connect_args
        )
    return Runtime(
        settings=settings,
        sessions=db_session.make_sessionmaker(engine),
        celery=jobs.make_client(settings),
        publisher=events.Publisher(settings),
    )
