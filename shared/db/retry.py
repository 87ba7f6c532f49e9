"""Retry a unit of work while the database is briefly unreachable (a restart, a failover).

Only errors that mean "the server or the connection went away" are retried; each attempt
must open its own session, so a retry starts on a fresh, pre-pinged connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc as sa_exc

log = logging.getLogger(__name__)
T = TypeVar("T")

# MySQL/MariaDB client and server codes of a lost or refused connection, a server shutting
# down, and lock conflicts that a new attempt resolves.
TRANSIENT_CODES = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2014, 2055, 1927, 4031}
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 5.0


def is_transient(exc: BaseException) -> bool:
    """Tell whether a database error means "try again later", not "this is wrong"."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError):
        return True
    args = getattr(exc.orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    return isinstance(exc, sa_exc.OperationalError) and (code is None or code in TRANSIENT_CODES)


def retry_transient(work: Callable[[], T], *, what: str, within_seconds: float = 180.0) -> T:
    """Run `work`, again after transient database errors, until it succeeds or time runs out."""
    deadline = time.monotonic() + within_seconds
    delay = FIRST_DELAY_SECONDS
    while True:
        try:
            return work()
        except sa_exc.DBAPIError as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unavailable (%s); retrying in %.1f s", what, exc.orig, delay)
        time.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_SECONDS)
