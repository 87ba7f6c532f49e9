"""One SQLAlchemy session per request, on `g`, closed by a teardown hook."""

from __future__ import annotations

import sqlalchemy.orm as so
from flask import Flask, g

from shared.db import session as db_session


def get_session() -> so.Session:
    """Return the request's session, opening it on first use."""
    if "db_session" not in g:
        g.db_session = db_session.new_session()
    return g.db_session


def close_session(_exc: BaseException | None = None) -> None:
    """Roll back whatever the route did not commit and close the session."""
    session = g.pop("db_session", None)
    if session is not None:
        session.rollback()
        session.close()


def init_app(app: Flask) -> None:
    """Install the teardown hook."""
    app.teardown_appcontext(close_session)
