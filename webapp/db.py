"""The app's runtime (sessions, Celery client, event publisher) and one session per request.

The runtime is built from the app's settings and kept in `app.extensions`; shared code called
inside the app's context finds it through `shared.runtime.current()`.
"""

from __future__ import annotations

import sqlalchemy.orm as so
from flask import Flask, current_app, g, has_app_context

from shared import runtime as shared_runtime
from shared.runtime import Runtime

EXTENSION = "qi2_runtime"


def app_runtime() -> Runtime | None:
    """Return the runtime of the Flask app of the current context, if there is one."""
    return current_app.extensions.get(EXTENSION) if has_app_context() else None


def get_session() -> so.Session:
    """Return the request's session, opening it on first use."""
    if "db_session" not in g:
        g.db_session = current_app.extensions[EXTENSION].sessions()
    return g.db_session


def close_session(_exc: BaseException | None = None) -> None:
    """Roll back whatever the route did not commit and close the session."""
    session = g.pop("db_session", None)
    if session is not None:
        session.rollback()
        session.close()


def init_app(app: Flask, runtime: Runtime) -> None:
    """Keep the app's runtime, let shared code find it, and install the teardown hook."""
    app.extensions[EXTENSION] = runtime
    shared_runtime.add_resolver(app_runtime)
    app.teardown_appcontext(close_session)
