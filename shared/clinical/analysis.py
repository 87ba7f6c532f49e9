"""Stateless analyses of a clinical table the browser parsed: column filter, type guess, summary.

The table arrives as `{PatientID: {column: cell}}`; cells are strings as PapaParse read them.
"" and None are empty cells.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from shared.errors import InvalidInput

SKIPPED = "__parsed_extra"  # PapaParse's column for cells beyond the header
PATIENT_ID = "PatientID"
TOO_LITTLE = 0.9  # a column at least this empty has too little data
MAX_CATEGORIES = 10

Table = Mapping[str, Mapping[str, Any]]


def columns(table: Table) -> list[str]:
    """Return the table's columns in first-seen order, PapaParse's extra column left out."""
    seen: dict[str, None] = {}
    for row in table.values():
        for name in row:
            if name != SKIPPED:
                seen.setdefault(name)
    return list(seen)


def cells(table: Table, column: str) -> list[str | None]:
    """Return one column's cells (missing and empty as None), one per patient."""
    return [_cell(row.get(column)) for row in table.values()]


def filter_columns(table: Table) -> dict[str, list[str]]:
    """Flag columns worth dropping: one value only, only empty, mostly empty, dates (C3)."""
    flagged: dict[str, list[str]] = {
        "only_one_value": [],
        "only_nulls": [],
        "too_little_data": [],
        "date_columns": [],
    }
    for name in columns(table):
        values = cells(table, name)
        present = [v for v in values if v is not None]
        if len(set(present)) == 1:
            flagged["only_one_value"].append(name)
        if not present:
            flagged["only_nulls"].append(name)
        if values and (len(values) - len(present)) / len(values) >= TOO_LITTLE:
            flagged["too_little_data"].append(name)
        if "date" in name.lower():
            flagged["date_columns"].append(name)
    return flagged


def guess_definitions(table: Table) -> dict[str, dict[str, str]]:
    """Guess each column's type: few values or text -> categorical, else numeric (C9)."""
    guesses = {}
    for name in columns(table):
        if name == PATIENT_ID:
            continue
        present = [v for v in cells(table, name) if v is not None]
        numeric = all(_number(v) is not None for v in present)
        if len(set(present)) <= MAX_CATEGORIES or not numeric:
            guesses[name] = {
                "feat_type": "Categorical",
                "encoding": "One-Hot Encoding",
                "missing_values": "Mode",
            }
        else:
            guesses[name] = {
                "feat_type": "Number",
                "encoding": "Normalization",
                "missing_values": "Median",
            }
    return guesses


def unique_values(table: Table, types: Mapping[str, str]) -> dict[str, list[str]]:
    """Summarise the columns that have a definition: category shares or numeric range (C4)."""
    summary = {}
    for name in columns(table):
        if name not in types:
            continue
        present = [v for v in cells(table, name) if v is not None]
        if types[name] == "Categorical":
            summary[name] = _shares(present)
        elif types[name] == "Number":
            summary[name] = _range(present)
        else:
            raise InvalidInput(f"Column {name!r}: unknown feature type {types[name]!r}")
    return summary


def _shares(values: list[str]) -> list[str]:
    """Return "value (pct%)" per distinct value, most frequent first."""
    counts = Counter(values)
    return [f"{value} ({round(100 * n / len(values), 2)}%)" for value, n in counts.most_common()]


def _range(values: Iterable[str]) -> list[str]:
    """Return ["min=x", "max=y"], or the parsing error the frontend shows."""
    numbers = [_number(v) for v in values]
    if not numbers or any(n is None for n in numbers):
        return ["ERROR parsing numerical values for this column"]
    low, high = min(numbers), max(numbers)  # type: ignore[type-var]
    return [f"min={_show(low)}", f"max={_show(high)}"]


def _show(value: float) -> str:
    """Render integers without a decimal point, other numbers as Python does."""
    return str(int(value)) if value.is_integer() else repr(value)


def _number(text: str) -> float | None:
    """Parse a finite number, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _cell(value: Any) -> str | None:
    """Normalise one cell: None and blank strings are empty."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
