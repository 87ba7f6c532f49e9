"""ORM model of a feature preset."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import TABLE_ARGS, Base, IdMixin, LongText, TimestampMixin


class FeaturePreset(IdMixin, TimestampMixin, Base):
    """A named extraction configuration; the YAML text lives in the row, not on disk."""

    __tablename__ = "feature_preset"
    __table_args__ = TABLE_ARGS

    name: so.Mapped[str] = so.mapped_column(sa.String(255), unique=True)
    file_name: so.Mapped[str] = so.mapped_column(sa.String(255))
    config_yaml: so.Mapped[str] = so.mapped_column(LongText)
