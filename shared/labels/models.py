"""ORM models of outcomes (label categories) and labels."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import TABLE_ARGS, AlbumId, Base, IdMixin, OwnedMixin, TimestampMixin


class LabelCategory(IdMixin, TimestampMixin, OwnedMixin, Base):
    """A named classification or survival outcome defined by a user on an album."""

    __tablename__ = "label_category"
    __table_args__ = (sa.UniqueConstraint("user_id", "album_id", "name"), TABLE_ARGS)

    album_id: so.Mapped[str] = so.mapped_column(AlbumId)
    label_type: so.Mapped[str] = so.mapped_column(sa.String(16))
    name: so.Mapped[str] = so.mapped_column(sa.String(255))
    pos_label: so.Mapped[str | None] = so.mapped_column(sa.String(255))

    labels: so.Mapped[list[Label]] = so.relationship(
        back_populates="category",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Label.id",
    )


class Label(IdMixin, TimestampMixin, Base):
    """One patient's value of an outcome."""

    __tablename__ = "label"
    __table_args__ = (sa.UniqueConstraint("label_category_id", "patient_id"), TABLE_ARGS)

    label_category_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("label_category.id", ondelete="CASCADE")
    )
    patient_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    label_content: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON)

    category: so.Mapped[LabelCategory] = so.relationship(back_populates="labels")
