"""ORM models of an extraction, its per-study tasks and the feature vectors they store.

The vectors live here, below the features domain, because the extraction's own read model
(`service.stored_summary`) reads them: the features domain builds on extractions, not back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import (
    TABLE_ARGS,
    AlbumId,
    Base,
    DicomUid,
    IdMixin,
    JobMixin,
    LargeBlob,
    LongText,
    OwnedMixin,
    TimestampMixin,
)


class FeatureExtraction(IdMixin, TimestampMixin, OwnedMixin, Base):
    """One extraction run of a user over an album, with its train/test split."""

    __tablename__ = "feature_extraction"
    __table_args__ = (sa.Index(None, "user_id", "album_id"), TABLE_ARGS)

    album_id: so.Mapped[str] = so.mapped_column(AlbumId)
    album_name: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    config_yaml: so.Mapped[str] = so.mapped_column(LongText)
    rois: so.Mapped[list[str]] = so.mapped_column(sa.JSON)
    result_id: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    finished_at: so.Mapped[dt.datetime | None]
    data_splitting_type: so.Mapped[str] = so.mapped_column(sa.String(16), default="traintest")
    train_test_split_type: so.Mapped[str] = so.mapped_column(sa.String(16), default="automatic")
    training_patients: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
    test_patients: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
    credential_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("worker_credential.id", ondelete="SET NULL")
    )

    tasks: so.Mapped[list[ExtractionTask]] = so.relationship(
        back_populates="extraction",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ExtractionTask.id",
    )


class ExtractionTask(IdMixin, TimestampMixin, JobMixin, Base):
    """The part of an extraction that handles one study; one Celery task."""

    __tablename__ = "feature_extraction_task"
    __table_args__ = (sa.UniqueConstraint("feature_extraction_id", "study_uid"), TABLE_ARGS)

    feature_extraction_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("feature_extraction.id", ondelete="CASCADE")
    )
    study_uid: so.Mapped[str] = so.mapped_column(DicomUid)
    patient_id: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    current_step: so.Mapped[int] = so.mapped_column(default=0)
    total_steps: so.Mapped[int] = so.mapped_column(default=0)
    status_message: so.Mapped[str] = so.mapped_column(sa.String(255), default="Waiting to start")
    warnings: so.Mapped[list[Any] | None] = so.mapped_column(sa.JSON)

    extraction: so.Mapped[FeatureExtraction] = so.relationship(back_populates="tasks")


class WorkerCredential(IdMixin, TimestampMixin, OwnedMixin, Base):
    """A credential the workers need (e.g. a Kheops capability token), kept server-side.

    Tasks receive only the row id; the secret never travels through the broker or Flower.
    """

    __tablename__ = "worker_credential"
    __table_args__ = TABLE_ARGS

    source: so.Mapped[str] = so.mapped_column(sa.String(16))
    album_id: so.Mapped[str] = so.mapped_column(AlbumId)
    external_id: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    secret: so.Mapped[str] = so.mapped_column(sa.Text)
    expires_at: so.Mapped[dt.datetime]


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
