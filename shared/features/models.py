"""ORM models of the compact feature storage."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import TABLE_ARGS, Base, IdMixin, LargeBlob, LongText, TimestampMixin


class FeatureNameSet(IdMixin, Base):
    """An ordered list of feature names, stored once and shared by many vectors."""

    __tablename__ = "feature_name_set"
    __table_args__ = TABLE_ARGS

    digest: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    names: so.Mapped[str] = so.mapped_column(LongText)


class FeatureVector(IdMixin, TimestampMixin, Base):
    """The feature values of one study for one (modality, ROI), packed as float64."""

    __tablename__ = "feature_vector"
    __table_args__ = (
        sa.UniqueConstraint("feature_extraction_task_id", "modality", "roi"),
        TABLE_ARGS,
    )

    feature_extraction_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("feature_extraction.id", ondelete="CASCADE"), index=True
    )
    feature_extraction_task_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("feature_extraction_task.id", ondelete="CASCADE")
    )
    modality: so.Mapped[str] = so.mapped_column(sa.String(64))
    roi: so.Mapped[str] = so.mapped_column(sa.String(255))
    name_set_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("feature_name_set.id"))
    values: so.Mapped[bytes] = so.mapped_column(LargeBlob)
