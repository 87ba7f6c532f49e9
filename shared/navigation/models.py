"""ORM model of a navigation history entry."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import TABLE_ARGS, Base, IdMixin, OwnedMixin, TimestampMixin


class NavigationEntry(IdMixin, TimestampMixin, OwnedMixin, Base):
    """One visited frontend path."""

    __tablename__ = "navigation_history"
    __table_args__ = TABLE_ARGS

    path: so.Mapped[str] = so.mapped_column(sa.String(2048))
