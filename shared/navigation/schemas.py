"""Wire shapes of navigation history (N1)."""

from __future__ import annotations

from pydantic import Field

from shared.schemas import Schema, TimestampedRead


class NavigationCreate(Schema):
    """The body of N1: the react-router pathname."""

    path: str = Field(min_length=1, max_length=2048)


class NavigationRead(TimestampedRead):
    """A stored navigation entry."""

    path: str
    user_id: str
