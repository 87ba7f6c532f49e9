"""Navigation history rules."""

from __future__ import annotations

import sqlalchemy.orm as so

from shared.navigation.models import NavigationEntry


def record_visit(session: so.Session, *, user_id: str, path: str) -> NavigationEntry:
    """Append a visited path to the user's history."""
    entry = NavigationEntry(user_id=user_id, path=path)
    session.add(entry)
    session.flush()
    return entry
