"""Every distinct statement the test run sends through the app's engine, for the dialect audit.

tests/shared/test_sql_dialects.py compiles each for MySQL and MariaDB: the suite runs on
MariaDB 10.11 while the compose default is MySQL 8.4, so syntax only one accepts must not slip
in unnoticed. Workers' statements (other processes) are not seen here; they use the same
services and models.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import ClauseElement

STATEMENTS: dict[Any, ClauseElement] = {}
LIMIT = 20_000  # distinct statements kept; far more than the suite produces


def _record(conn: Any, clauseelement: Any, *args: Any) -> None:
    """Keep one instance of each statement shape (by SQLAlchemy's cache key)."""
    if not isinstance(clauseelement, ClauseElement) or len(STATEMENTS) >= LIMIT:
        return
    cache_key = clauseelement._generate_cache_key()
    STATEMENTS.setdefault(cache_key.key if cache_key else id(clauseelement), clauseelement)


def attach(engine: sa.Engine) -> None:
    """Record what `engine` executes from now on."""
    sa.event.listen(engine, "before_execute", _record)
