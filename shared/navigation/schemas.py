"""Wire shapes of navigation history (N1)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from shared.schemas import Schema, TimestampedRead, no_control_characters


class NavigationCreate(Schema):
    """The body of N1: the react-router pathname."""

    path: Annotated[str, AfterValidator(no_control_characters)] = Field(
        min_length=1, max_length=2048
    )


class NavigationRead(TimestampedRead):
    """A stored navigation entry."""

    path: str
    user_id: str
