"""Reading a row on behalf of its owner."""

from __future__ import annotations

from typing import Protocol, TypeVar

import sqlalchemy.orm as so

from shared.errors import NotFound


class Owned(Protocol):
    """A row with an owner."""

    user_id: str


OwnedT = TypeVar("OwnedT", bound=Owned)


def get_owned(
    session: so.Session, model: type[OwnedT], row_id: int, *, user_id: str, missing: str
) -> OwnedT:
    """Return the user's row; another user's answers exactly like a missing one (404)."""
    row = session.get(model, row_id)
    if row is None or row.user_id != user_id:
        raise NotFound(missing)
    return row
