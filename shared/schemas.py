"""Pydantic base classes shared by every domain's schemas."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer


def iso_naive(value: dt.datetime) -> str:
    """Render a naive-UTC datetime as the frontend expects (`isoformat()`, no zone suffix)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat()


IsoDatetime = Annotated[dt.datetime, PlainSerializer(iso_naive, return_type=str)]


class Schema(BaseModel):
    """Base for request bodies: strings are trimmed."""

    # Unknown keys are ignored, never assigned: the frontend sends extras (e.g. album_id).
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)


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
