"""Pydantic base classes shared by every domain's schemas."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    StringConstraints,
    field_validator,
)

from shared.db.base import ALBUM_ID_LENGTH

INT64_MAX = 2**63 - 1
# C0 controls and DEL; free text may keep tab and newlines, names and ids may not.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
TEXT_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def iso_naive(value: dt.datetime) -> str:
    """Render a naive-UTC datetime as the frontend expects (`isoformat()`, no zone suffix)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat()


IsoDatetime = Annotated[dt.datetime, PlainSerializer(iso_naive, return_type=str)]


def no_control_characters(value: str) -> str:
    """Refuse a name or id holding NUL, tab, newline or another control character."""
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters")
    return value


# Names (presets, outcomes, collections, clinical features), patient ids and album ids of requests.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(no_control_characters)
]
PatientId = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(no_control_characters)
]
AlbumIdText = Annotated[
    str, StringConstraints(max_length=ALBUM_ID_LENGTH), AfterValidator(no_control_characters)
]


def _check_plain_values(value: Any) -> None:
    """Refuse integers past 64 bits and NUL/control characters anywhere in a body's values."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not -INT64_MAX - 1 <= item <= INT64_MAX:
            raise ValueError("integer out of the 64-bit range")
        if isinstance(item, str) and TEXT_CONTROL_CHARACTERS.search(item):
            raise ValueError("must not contain NUL or control characters")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)


class Schema(BaseModel):
    """Base for request bodies: strings trimmed, integers within 64 bits, no NUL or controls."""

    # Unknown keys are ignored, never assigned: the frontend sends extras (e.g. album_id).
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)

    @field_validator("*", mode="after")
    @classmethod
    def _plain_values(cls, value: Any) -> Any:
        """Every field of every request schema: 64-bit integers, no control characters."""
        _check_plain_values(value)
        return value


class ReadSchema(BaseModel):
    """Base for responses built from ORM rows."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class TimestampedRead(ReadSchema):
    """id + created_at + updated_at, first in every serialised row."""

    id: int
    created_at: IsoDatetime
    updated_at: IsoDatetime


class ErrorBody(BaseModel):
    """Every error response: a readable message, plus per-key details for validation errors."""

    error: str
    details: list[dict[str, Any]] | None = None
