"""Trained models as the API and the `training-status` event show them."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.labels.models import LabelCategory
from shared.modeling.models import TrainedModel
from shared.modeling.schemas import ModelRead, not_a_number_as_text


def to_read(session: so.Session, models: list[TrainedModel]) -> list[ModelRead]:
    """Format models with their outcome's type and name (one query for all)."""
    if not models:
        return []  # most albums have none: no query for their outcomes
    ids = {m.label_category_id for m in models}
    categories = {
        row.id: row
        for row in session.execute(
            sa.select(LabelCategory.id, LabelCategory.label_type, LabelCategory.name).where(
                LabelCategory.id.in_(ids)
            )
        )
    }
    return [_read(model, categories[model.label_category_id]) for model in models]


def _read(model: TrainedModel, category: sa.Row) -> ModelRead:
    """Format one model."""
    training = not_a_number_as_text(model.training_metrics)
    test = not_a_number_as_text(model.test_metrics)
    return ModelRead(
        id=model.id,
        created_at=model.created_at,
        updated_at=model.updated_at,
        name=model.name,
        best_algorithm=model.best_algorithm,
        data_splitting_type=model.data_splitting_type,
        train_test_split_type=model.train_test_split_type,
        training_validation=model.training_validation,
        test_validation=model.test_validation,
        best_data_normalization=model.best_data_normalization,
        feature_selection=model.feature_selection,
        feature_names=model.feature_names,
        training_patient_ids=model.training_patient_ids,
        test_patient_ids=model.test_patient_ids,
        model_path=model.artifact_path,
        training_metrics=training,
        test_metrics=test,
        test_predictions=model.test_predictions,
        test_predictions_probabilities=model.test_predictions_probabilities,
        test_bootstrap_values=not_a_number_as_text(model.test_bootstrap_values),
        test_scores_values=not_a_number_as_text(model.test_scores_values),
        patients_left_out=len(model.left_out_patients or []),
        dropped_patients=model.dropped_patients or [],
        hyperparameters=model.hyperparameters,
        selection_cv_metrics=not_a_number_as_text(model.selection_cv_metrics),
        evaluation=not_a_number_as_text(model.evaluation),
        user_id=model.user_id,
        album_id=model.album_id,
        feature_extraction_id=model.feature_extraction_id,
        feature_collection_id=model.feature_collection_id,
        type=category.label_type,
        label_category=category.name,
        training_metrics_alias=training,
        test_metrics_alias=test,
    )
