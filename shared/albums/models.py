"""ORM models of the album ROI cache and the current outcome per user and album."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import TABLE_ARGS, AlbumId, Base, IdMixin, OwnedMixin, TimestampMixin


class AlbumRoiCache(IdMixin, TimestampMixin, Base):
    """ROI names of an album with the number of studies holding each, and the studies seen.

    Shared by all users of the album: it is only served after the caller's own image-source
    credentials listed the album's studies.
    """

    __tablename__ = "album"
    __table_args__ = TABLE_ARGS

    album_id: so.Mapped[str] = so.mapped_column(AlbumId, unique=True)
    study_uids: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
    rois: so.Mapped[dict[str, int] | None] = so.mapped_column(sa.JSON)


class AlbumOutcome(IdMixin, TimestampMixin, OwnedMixin, Base):
    """The outcome (label category) a user has selected for an album."""

    __tablename__ = "album_outcome"
    __table_args__ = (sa.UniqueConstraint("user_id", "album_id"), TABLE_ARGS)

    album_id: so.Mapped[str] = so.mapped_column(AlbumId)
    outcome_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("label_category.id", ondelete="SET NULL")
    )
