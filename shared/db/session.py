"""Engine and session factory built from settings; one session per unit of work.

The factory belongs to the runtime of the app or worker (`shared.runtime`), built from its
settings; `new_session` and `session_scope` open sessions of the current one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared import runtime

# Settings.db_pool_size's default (DB_POOL_SIZE), for engines built without settings.
DEFAULT_POOL_SIZE = 10


def make_engine(
    url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    tls: dict[str, Any] | None = None,
    **overrides: Any,
) -> sa.Engine:
    """Create an engine with the pool settings each backend needs; tls: db_connect_args."""
    options: dict[str, Any] = {}
    if url.startswith("sqlite"):
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        # pre_ping + recycle below MySQL's wait_timeout: no "server has gone away" after idling.
        options.update(pool_pre_ping=True, pool_recycle=1800)
        if url.startswith("mysql") and tls:
            options["connect_args"] = tls  # a database on another host: over TLS
        if "poolclass" not in overrides:
            options["pool_size"] = pool_size
    options.update(overrides)
    engine = sa.create_engine(url, **options)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Enforce foreign keys and allow concurrent readers on the embedded SQLite file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def make_sessionmaker(
    engine: sa.Engine | sa.Connection, **session_options: Any
) -> so.sessionmaker[so.Session]:
    """Return a session factory bound to an engine (or, in tests, to one open connection)."""
    return so.sessionmaker(bind=engine, expire_on_commit=False, **session_options)


def configure(engine: sa.Engine | sa.Connection, **session_options: Any) -> so.sessionmaker:
    """Point the current runtime's sessions at another engine or connection (tests, tools)."""
    factory = make_sessionmaker(engine, **session_options)
    runtime.current().sessions = factory
    return factory


def get_session_factory() -> so.sessionmaker:
    """Return the session factory of the current app or worker."""
    return runtime.current().sessions


def new_session() -> so.Session:
    """Open a new session; the caller owns commit and close."""
    return get_session_factory()()


@contextmanager
def session_scope() -> Iterator[so.Session]:
    """Run a unit of work: commit on success, roll back on error, always close."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose() -> None:
    """Drop pooled connections (after a fork, the child must not reuse the parent's sockets)."""
    bind = get_session_factory().kw.get("bind")
    if isinstance(bind, sa.Engine):
        bind.dispose(close=False)
