"""ORM models of clinical feature files, definitions and values."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import TABLE_ARGS, AlbumId, Base, IdMixin, OwnedMixin, TimestampMixin


class ClinicalFeatureFile(IdMixin, TimestampMixin, OwnedMixin, Base):
    """One uploaded clinical table of a user for an album."""

    __tablename__ = "clinical_feature_file"
    __table_args__ = (sa.UniqueConstraint("user_id", "album_id", "name"), TABLE_ARGS)

    album_id: so.Mapped[str] = so.mapped_column(AlbumId)
    name: so.Mapped[str] = so.mapped_column(sa.String(255))


class ClinicalFeatureDefinition(IdMixin, TimestampMixin, OwnedMixin, Base):
    """A column of a clinical file with its type, encoding and missing-value policy."""

    __tablename__ = "clinical_feature_definition"
    __table_args__ = (
        sa.UniqueConstraint("clinical_feature_file_id", "name"),
        sa.Index(None, "user_id", "album_id"),
        TABLE_ARGS,
    )

    clinical_feature_file_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("clinical_feature_file.id", ondelete="CASCADE")
    )
    album_id: so.Mapped[str] = so.mapped_column(AlbumId)
    name: so.Mapped[str] = so.mapped_column(sa.String(255))
    feat_type: so.Mapped[str] = so.mapped_column(sa.String(16))
    encoding: so.Mapped[str] = so.mapped_column(sa.String(32))
    missing_values: so.Mapped[str] = so.mapped_column(sa.String(16))


class ClinicalFeatureValue(IdMixin, TimestampMixin, Base):
    """One clinical cell: a patient's value of a definition (as text, null when missing)."""

    __tablename__ = "clinical_feature_value"
    __table_args__ = (
        sa.UniqueConstraint("clinical_feature_definition_id", "patient_id"),
        TABLE_ARGS,
    )

    clinical_feature_definition_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("clinical_feature_definition.id", ondelete="CASCADE")
    )
    patient_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    value: so.Mapped[str | None] = so.mapped_column(sa.Text)
