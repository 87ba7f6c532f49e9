"""Wire shapes of albums (contract §6.3)."""

from __future__ import annotations

from shared.schemas import TimestampedRead


class AlbumOutcomeRead(TimestampedRead):
    """The current outcome a user selected for an album."""

    album_id: str
    user_id: str
    outcome_id: int | None
