"""What an app or a worker builds once from its settings: sessions, task client, event publisher.

`create_app(settings)` builds one per app (kept in `app.extensions`), a worker builds one at
start-up; neither reads a global. Shared code, which is called from both, reaches the runtime
of the app or worker it runs in through `current()`: a resolver (the web app's: the Flask app
of the current context) first, else the process's installed runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.orm as so

if TYPE_CHECKING:
    from celery import Celery

    from shared.config import Settings
    from shared.events import Publisher


@dataclass(slots=True)
class Runtime:
    """The settings of one app or worker and what was built from them."""

    settings: Settings
    sessions: so.sessionmaker[so.Session]
    celery: Celery
    publisher: Publisher

    def after_fork(self) -> None:
        """Drop the parent's pooled sockets: a forked child must open its own."""
        bind = self.sessions.kw.get("bind")
        if isinstance(bind, sa.Engine):
            bind.dispose(close=False)
        self.publisher.reset()


Resolver = Callable[[], "Runtime | None"]

_installed: Runtime | None = None
_resolvers: list[Resolver] = []


def install(runtime: Runtime | None) -> None:
    """Make a runtime the process's own (a worker at start-up, a test session, a script)."""
    global _installed
    _installed = runtime


def add_resolver(resolver: Resolver) -> None:
    """Let an edge name the runtime of the context code runs in (the web app: its Flask app)."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def current() -> Runtime:
    """Return the runtime of the app or worker this code runs in."""
    for resolver in _resolvers:
        found = resolver()
        if found is not None:
            return found
    if _installed is None:
        raise RuntimeError(
            "No runtime: build one from the settings (shared.bootstrap.build) and install it"
        )
    return _installed
