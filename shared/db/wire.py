"""SQL expressions that let the database format values exactly as the wire shows them.

Hundreds of rows per response (E1's tasks, an outcome's labels): parsing each DATETIME into a
Python datetime in PyMySQL, then formatting it back, cost more than the rest of the row.
MariaDB/MySQL format with DATE_FORMAT; the embedded SQLite default stores DATETIME as text
('YYYY-MM-DD HH:MM:SS.ffffff') and only needs it reshaped.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

SECONDS_FORMAT = "%Y-%m-%dT%H:%i:%s"


class IsoText(FunctionElement):
    """`datetime.isoformat()` of a naive DATETIME(6) column, compiled per dialect."""

    type = sa.String()
    inherit_cache = True


def iso_text(column: Any) -> sa.ColumnElement[str]:
    """The text of `datetime.isoformat()` for a naive DATETIME(6) column (the wire format:
    `shared.schemas.iso_naive`), microseconds only when there are some."""
    return IsoText(column)


@compiles(IsoText)
def _iso_text_mysql(element: IsoText, compiler: Any, **kw: Any) -> str:
    """MariaDB/MySQL: DATE_FORMAT, with the fraction only when it is not zero."""
    (column,) = element.clauses
    expression = sa.case(
        (sa.func.microsecond(column) == 0, sa.func.date_format(column, SECONDS_FORMAT)),
        else_=sa.func.date_format(column, SECONDS_FORMAT + ".%f"),
    )
    return compiler.process(expression, **kw)


@compiles(IsoText, "sqlite")
def _iso_text_sqlite(element: IsoText, compiler: Any, **kw: Any) -> str:
    """SQLite: the stored text with a 'T', the fraction dropped when it is all zeros."""
    (column,) = element.clauses
    whole = sa.func.replace(sa.func.substr(column, 1, 19), " ", "T")
    expression = sa.case(
        (sa.func.coalesce(sa.func.substr(column, 21), "") == sa.literal("000000"), whole),
        (sa.func.length(column) <= 19, whole),
        else_=sa.func.replace(column, " ", "T"),
    )
    return compiler.process(expression, **kw)
