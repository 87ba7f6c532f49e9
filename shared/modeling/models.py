"""ORM models of training runs and trained models."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db.base import (
    TABLE_ARGS,
    AlbumId,
    Base,
    HeartbeatMixin,
    IdMixin,
    JobMixin,
    LargeBlob,
    OwnedMixin,
    TimestampMixin,
)


class TrainedModel(IdMixin, TimestampMixin, OwnedMixin, Base):
    """The best pipeline of one training run, with its metrics and predictions."""

    __tablename__ = "model"
    __table_args__ = (sa.Index(None, "user_id", "album_id"), TABLE_ARGS)

    album_id: so.Mapped[str] = so.mapped_column(AlbumId)
    name: so.Mapped[str] = so.mapped_column(sa.String(255))
    best_algorithm: so.Mapped[str] = so.mapped_column(sa.String(64))
    data_splitting_type: so.Mapped[str] = so.mapped_column(sa.String(16))
    train_test_split_type: so.Mapped[str] = so.mapped_column(sa.String(16))
    training_validation: so.Mapped[str] = so.mapped_column(sa.Text)
    test_validation: so.Mapped[str | None] = so.mapped_column(sa.Text)
    best_data_normalization: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    feature_selection: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    feature_names: so.Mapped[list[str]] = so.mapped_column(sa.JSON)
    training_patient_ids: so.Mapped[list[str]] = so.mapped_column(sa.JSON)
    test_patient_ids: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
    artifact_path: so.Mapped[str | None] = so.mapped_column(sa.String(512))
    training_metrics: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON)
    test_metrics: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    test_predictions: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    test_predictions_probabilities: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    test_bootstrap_values: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    test_scores_values: so.Mapped[list[Any] | None] = so.mapped_column(sa.JSON)
    test_feature_importance: so.Mapped[list[Any] | None] = so.mapped_column(sa.JSON)
    feature_extraction_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("feature_extraction.id", ondelete="CASCADE"), index=True
    )
    feature_collection_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("feature_collection.id", ondelete="CASCADE"), index=True
    )
    label_category_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("label_category.id", ondelete="CASCADE"), index=True
    )
    # What the result views, the comparison, export and predict need (train-platform).
    kind: so.Mapped[str] = so.mapped_column(sa.String(16))  # "classification" | "survival"
    positive_class: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    hyperparameters: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    input_columns: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
    cv_scores: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    cv_signature: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    test_outcomes: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    library_versions: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    dropped_patients: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
    left_out_patients: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON)
    # Nested CV: the final search's best-of-grid score (optimistic, for reference) and how
    # every reported figure was obtained (folds, choices, failures, left-out patients).
    selection_cv_metrics: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    evaluation: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    artifact_sha256: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    artifact_size: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)

    chunks: so.Mapped[list[ModelArtifactChunk]] = so.relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ModelArtifactChunk.seq"
    )


class ModelArtifactChunk(IdMixin, Base):
    """A piece of a model's compressed pipeline (pieces stay under MySQL's packet limit)."""

    __tablename__ = "model_artifact"
    __table_args__ = (sa.UniqueConstraint("model_id", "seq"), TABLE_ARGS)

    model_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("model.id", ondelete="CASCADE"))
    seq: so.Mapped[int]
    data: so.Mapped[bytes] = so.mapped_column(LargeBlob)


class TrainingRun(IdMixin, TimestampMixin, OwnedMixin, JobMixin, HeartbeatMixin, Base):
    """One training request: its status, progress and error live here, not in Redis."""

    __tablename__ = "training_run"
    __table_args__ = (sa.Index(None, "user_id", "album_id"), TABLE_ARGS)

    album_id: so.Mapped[str] = so.mapped_column(AlbumId)
    training_id: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    phase: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    current_step: so.Mapped[int] = so.mapped_column(default=0)
    total_steps: so.Mapped[int] = so.mapped_column(default=0)
    parameters: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON)
    feature_extraction_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("feature_extraction.id", ondelete="CASCADE"), index=True
    )
    feature_collection_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("feature_collection.id", ondelete="CASCADE")
    )
    label_category_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("label_category.id", ondelete="CASCADE")
    )
    model_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("model.id", ondelete="SET NULL")
    )


class Prediction(IdMixin, TimestampMixin, OwnedMixin, JobMixin, HeartbeatMixin, Base):
    """A stored model applied to an extraction: a job like a training run (issue #15 §8).

    The row is the truth for status, phase and error, and holds the result: one output per
    patient, the patients skipped, and the external-validation metrics when the extraction's
    album has labels of the model's kind.
    """

    __tablename__ = "prediction"
    __table_args__ = (TABLE_ARGS,)

    model_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("model.id", ondelete="CASCADE"), index=True
    )
    feature_extraction_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("feature_extraction.id", ondelete="CASCADE"), index=True
    )
    # The outcome whose labels validated the predictions (None: no metrics).
    label_category_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("label_category.id", ondelete="SET NULL")
    )
    phase: so.Mapped[str] = so.mapped_column(sa.String(16), default="pending")
    predictions: so.Mapped[list[Any] | None] = so.mapped_column(sa.JSON)
    skipped: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    excluded_from_metrics: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    metrics: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
    validation: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    n_labelled: so.Mapped[int] = so.mapped_column(default=0)
