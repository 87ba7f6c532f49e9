"""Engine and session factory built from settings; one session per unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.config import get_settings

_factory: so.sessionmaker[so.Session] | None = None


def make_engine(url: str, **overrides: Any) -> sa.Engine:
    """Create an engine with the pool settings each backend needs."""
    options: dict[str, Any] = {}
    if url.startswith("sqlite"):
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        # pre_ping + recycle below MySQL's wait_timeout: no "server has gone away" after idling.
        options.update(pool_pre_ping=True, pool_recycle=1800)
        if url.startswith("mysql") and (tls := get_settings().db_connect_args):
            options["connect_args"] = tls  # a database on another host: over TLS
        if "poolclass" not in overrides:
            options["pool_size"] = get_settings().db_pool_size
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


def configure(engine: sa.Engine | None = None, **session_options: Any) -> so.sessionmaker:
    """Install the process-wide session factory (from settings unless an engine is given)."""
    global _factory
    if engine is None:
        engine = make_engine(get_settings().sqlalchemy_url)
    _factory = so.sessionmaker(bind=engine, expire_on_commit=False, **session_options)
    return _factory


def get_session_factory() -> so.sessionmaker:
    """Return the session factory, configuring it from settings on first use."""
    return _factory if _factory is not None else configure()


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
    if _factory is not None and _factory.kw.get("bind") is not None:
        _factory.kw["bind"].dispose(close=False)
