"""ORM model of a feature collection."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import TABLE_ARGS, Base, IdMixin, OwnedMixin, TimestampMixin


class FeatureCollection(IdMixin, TimestampMixin, OwnedMixin, Base):
    """A user-curated subset of feature IDs of one extraction."""

    __tablename__ = "feature_collection"
    __table_args__ = TABLE_ARGS

    feature_extraction_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("feature_extraction.id", ondelete="CASCADE"), index=True
    )
    name: so.Mapped[str] = so.mapped_column(sa.String(255))
    feature_ids: so.Mapped[list[str]] = so.mapped_column(sa.JSON)
    data_splitting_type: so.Mapped[str] = so.mapped_column(sa.String(16), default="traintest")
    train_test_split_type: so.Mapped[str] = so.mapped_column(sa.String(16), default="automatic")
    training_patients: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
    test_patients: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
