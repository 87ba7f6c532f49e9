"""Trained models: list (M1), train (M2), delete (M3), compare (M4), result views (M5-M13) and
export (predictions: webapp/api/predictions.py). Every by-id route answers 404 for another
user's model."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from pydantic import RootModel, ValidationError
from spectree import Response as Resp

from shared.errors import InvalidInput, NotFound
from shared.modeling import compare, read, results, service
from shared.modeling.models import TrainedModel
from shared.modeling.schemas import (
    FeatureImportances,
    ModelComparison,
    ModelIds,
    ModelRead,
    PredictionPlots,
    RocList,
    TestScores,
    TrainRequest,
    TrainStarted,
)
from webapp.auth import current_user
from webapp.db import get_session
from webapp.downloads import attachment
from webapp.extensions import spec
from webapp.serialize import dump, dump_all

bp = Blueprint("models", __name__)
TAGS = ["models"]
# `{model_ids}` bodies are read by hand (the frontend's downloads send no Content-Type, and the
# ROC routes also answer GET); the schema is declared for the OpenAPI document only.
BODY_IDS: dict[str, Any] = {"json": ModelIds, "skip_validation": True}


class ModelList(RootModel[list[ModelRead]]):
    """The caller's models of an album."""


def _owned(model_id: int) -> TrainedModel:
    """Load the caller's model (404 for anyone else's)."""
    return service.get_owned(get_session(), user_id=current_user().user_id, model_id=model_id)


def _owned_many(ids: list[int]) -> list[TrainedModel]:
    """Load several of the caller's models, in the order asked."""
    return [_owned(model_id) for model_id in ids]


def _ids_from_body(default: int | None = None) -> list[int]:
    """Read `{model_ids}` from a JSON body (the frontend may send it without Content-Type)."""
    payload = request.get_json(force=True, silent=True)
    if payload is None and default is not None:
        return [default]
    try:
        ids = ModelIds.model_validate(payload or {}).ids()
    except (ValidationError, ValueError) as exc:
        raise InvalidInput("The body needs model_ids: a list of model ids") from exc
    if not ids:
        raise InvalidInput("model_ids is empty")
    return ids


@bp.get("/models/<album_id>")
@spec.validate(resp=Resp(HTTP_200=ModelList), tags=TAGS)
def list_models(album_id: str) -> list[dict[str, Any]]:
    """M1: the caller's models of an album (every extraction)."""
    session = get_session()
    models = service.list_for_album(session, user_id=current_user().user_id, album_id=album_id)
    return dump_all(read.to_read(session, models))


@bp.post("/models/<album_id>")
@spec.validate(
    resp=Resp(HTTP_200=TrainStarted, HTTP_400=None, HTTP_404=None, HTTP_503=None), tags=TAGS
)
def train(album_id: str, json: TrainRequest) -> dict[str, Any]:
    """M2: validate, create the training run and queue it; progress comes as `training-status`."""
    session = get_session()
    run = service.start_training(
        session, user_id=current_user().user_id, album_id=album_id, body=json
    )
    session.commit()
    service.enqueue(session, run=run)
    return dump(TrainStarted(**{"training-id": run.training_id, "n-steps": run.total_steps}))


@bp.delete("/models/<int:model_id>")
@spec.validate(resp=Resp(HTTP_200=ModelRead, HTTP_404=None), tags=TAGS)
def delete_model(model_id: int) -> dict[str, Any]:
    """M3: delete a model with its stored pipeline (one transaction); return it as it was."""
    session = get_session()
    model = _owned(model_id)
    (body,) = read.to_read(session, [model])
    service.delete(session, model=model)
    session.commit()
    return dump(body)


@bp.post("/models/compare-data")
@spec.validate(
    resp=Resp(HTTP_200=ModelComparison, HTTP_400=None, HTTP_404=None), tags=TAGS, **BODY_IDS
)
def compare_models() -> dict[str, Any]:
    """M4: p-values of valid paired tests between models (a string where none is valid)."""
    return dump(ModelComparison(**compare.comparison(_owned_many(_ids_from_body()))))


def _plots(model_id: int, data_type: str) -> list[dict[str, Any]]:
    """Build prediction-plot items of the body's models (the path id when there is no body)."""
    return [results.prediction_plot(m, data_type) for m in _owned_many(_ids_from_body(model_id))]


@bp.post("/models/<int:model_id>/plot-test-predictions")
@spec.validate(
    resp=Resp(HTTP_200=PredictionPlots, HTTP_400=None, HTTP_404=None), tags=TAGS, **BODY_IDS
)
def plot_test_predictions(model_id: int) -> list[dict[str, Any]]:
    """M5: each model's test patients with probability or risk, prediction and truth."""
    return _plots(model_id, "test")


@bp.post("/models/<int:model_id>/plot-train-predictions")
@spec.validate(
    resp=Resp(HTTP_200=PredictionPlots, HTTP_400=None, HTTP_404=None), tags=TAGS, **BODY_IDS
)
def plot_train_predictions(model_id: int) -> list[dict[str, Any]]:
    """M6: train predictions are not stored; items say so (the frontend never asks)."""
    return _plots(model_id, "train")


def _roc(model_id: int, data_type: str) -> list[dict[str, Any]]:
    """Build ROC items: GET = the path's model, POST = the body's models (at most 10)."""
    ids = _ids_from_body(model_id) if request.method == "POST" else [model_id]
    if len(ids) > results.MAX_ROC_MODELS:
        raise InvalidInput(f"At most {results.MAX_ROC_MODELS} models per ROC request")
    return [results.roc_data(model, data_type) for model in _owned_many(ids)]


@bp.route("/models/<int:model_id>/roc-curve-test-data", methods=["GET", "POST"])
@spec.validate(resp=Resp(HTTP_200=RocList, HTTP_400=None, HTTP_404=None), tags=TAGS, **BODY_IDS)
def roc_test(model_id: int) -> list[dict[str, Any]]:
    """M7: ROC curve of the test predictions (placeholder with `error` when impossible)."""
    return _roc(model_id, "test")


@bp.route("/models/<int:model_id>/roc-curve-train-data", methods=["GET", "POST"])
@spec.validate(resp=Resp(HTTP_200=RocList, HTTP_400=None, HTTP_404=None), tags=TAGS, **BODY_IDS)
def roc_train(model_id: int) -> list[dict[str, Any]]:
    """M8: placeholders: train predictions are not stored."""
    return _roc(model_id, "train")


def _csv(model: TrainedModel, prefix: str, text: str) -> Response:
    """Send a CSV attachment named after the model."""
    suffix = results.download_suffix(get_session(), model)
    return attachment(text.encode(), results.csv_filename(prefix, suffix), "text/csv")


@bp.get("/models/<int:model_id>/download-test-bootstrap-values")
@spec.validate(resp=Resp(HTTP_200=None, HTTP_404=None), tags=TAGS)
def download_bootstrap_values(model_id: int) -> Response:
    """M9: per-metric bootstrap values, one column per repetition."""
    model = _owned(model_id)
    if not model.test_bootstrap_values:
        raise NotFound("No test bootstrap values saved for this model")
    return _csv(model, "test_bootstrap", results.bootstrap_values_csv(model.test_bootstrap_values))


@bp.get("/models/<int:model_id>/download-test-scores-values")
@spec.validate(resp=Resp(HTTP_200=None, HTTP_404=None), tags=TAGS)
def download_scores_values(model_id: int) -> Response:
    """M10: per-metric scores of each test resample."""
    model = _owned(model_id)
    if not model.test_scores_values:
        raise NotFound("No test scores saved for this model")
    return _csv(model, "test_scores", results.scores_values_csv(model.test_scores_values))


@bp.get("/models/<int:model_id>/download-feature-importances")
@spec.validate(resp=Resp(HTTP_200=None, HTTP_404=None), tags=TAGS)
def download_feature_importances(model_id: int) -> Response:
    """M11: permutation importances (or the reference's 'not saved' table)."""
    model = _owned(model_id)
    text = results.importances_csv(model.test_feature_importance)
    return _csv(model, "test_feature_importances", text)


@bp.get("/models/<int:model_id>/feature-importances")
@spec.validate(resp=Resp(HTTP_200=FeatureImportances, HTTP_404=None), tags=TAGS)
def feature_importances(model_id: int) -> dict[str, Any]:
    """M12: permutation importances, highest first."""
    model = _owned(model_id)
    if not model.test_feature_importance:
        raise NotFound(results.NO_IMPORTANCE)
    ranked = sorted(
        model.test_feature_importance,
        key=lambda item: _sortable(item.get("importance_value")),
        reverse=True,
    )
    return dump(
        FeatureImportances(
            feature_importances=ranked,
            model_id=str(model_id),
            algorithm=model.best_algorithm,
            normalization=model.best_data_normalization,
            computed_on=results.importance_basis(model),
        )
    )


def _sortable(value: Any) -> float:
    """Sort key of an importance: "N/A" last."""
    return float(value) if isinstance(value, (int, float)) else float("-inf")


@bp.get("/models/<int:model_id>/test-scores-values")
@spec.validate(resp=Resp(HTTP_200=TestScores, HTTP_404=None), tags=TAGS)
def test_scores_values(model_id: int) -> dict[str, Any]:
    """M13: the score of every test resample."""
    model = _owned(model_id)
    if not model.test_scores_values:
        raise NotFound("No test scores saved for this model")
    return dump(
        TestScores(
            model_id=str(model_id),
            algorithm=model.best_algorithm,
            normalization=model.best_data_normalization,
            test_scores=model.test_scores_values,
        )
    )


@bp.get("/models/<int:model_id>/export")
@spec.validate(resp=Resp(HTTP_200=None, HTTP_404=None), tags=TAGS)
def export_model(model_id: int) -> Response:
    """A ZIP of the fitted pipeline (`model.joblib`) and its JSON model card."""
    data, name = results.export_archive(get_session(), _owned(model_id))
    return attachment(data, name, "application/zip")
