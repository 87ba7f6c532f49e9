"""SQL expressions that let MariaDB/MySQL format values exactly as the wire shows them.

Hundreds of rows per response (E1's tasks, an outcome's labels): parsing each DATETIME into a
Python datetime in PyMySQL, then formatting it back, cost more than the rest of the row.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

SECONDS_FORMAT = "%Y-%m-%dT%H:%i:%s"


def iso_text(column: Any) -> sa.ColumnElement[str]:
    """The text of `datetime.isoformat()` for a naive DATETIME(6) column (the wire format:
    `shared.schemas.iso_naive`), microseconds only when there are some."""
    return sa.case(
        (sa.func.microsecond(column) == 0, sa.func.date_format(column, SECONDS_FORMAT)),
        else_=sa.func.date_format(column, SECONDS_FORMAT + ".%f"),
    )
