"""Predictions with a stored model (issue #15 §8): start one (202 at once), read one, list a
model's. The work runs on the prediction worker; no route waits for it. Progress and the result
reach the owner as `prediction-status` events and through GET. 404 for anyone else's rows."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from spectree import Response as Resp

from shared.modeling import predictions
from shared.modeling.schemas import PredictionList, PredictionRead, PredictRequest
from webapp.auth import current_user
from webapp.db import get_session
from webapp.extensions import spec
from webapp.serialize import dump, dump_all

bp = Blueprint("predictions", __name__)
TAGS = ["predictions"]


@bp.post("/models/<int:model_id>/predict")
@spec.validate(
    resp=Resp(HTTP_202=PredictionRead, HTTP_400=None, HTTP_404=None, HTTP_503=None), tags=TAGS
)
def predict(model_id: int, json: PredictRequest) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Apply a model to an extraction of the caller: checked and queued, answered at once.

    The answer (202) is the PENDING prediction with its `url` (also the Location header);
    `prediction-status` events follow, and GET on the url gives the state and the result.
    """
    session = get_session()
    prediction = predictions.start(
        session, user_id=current_user().user_id, model_id=model_id, extraction_id=json.extraction_id
    )
    session.commit()
    predictions.enqueue(session, prediction=prediction)
    body = dump(predictions.to_read(prediction))
    return body, 202, {"Location": body["url"]}


@bp.get("/predictions/<int:prediction_id>")
@spec.validate(resp=Resp(HTTP_200=PredictionRead, HTTP_404=None), tags=TAGS)
def read(prediction_id: int) -> dict[str, Any]:
    """One prediction of the caller: its state, and its result once it ended."""
    row = predictions.get_owned(
        get_session(), user_id=current_user().user_id, prediction_id=prediction_id
    )
    return dump(predictions.to_read(row))


@bp.get("/models/<int:model_id>/predictions")
@spec.validate(resp=Resp(HTTP_200=PredictionList, HTTP_404=None), tags=TAGS)
def list_for_model(model_id: int) -> list[dict[str, Any]]:
    """The predictions of one of the caller's models, newest first."""
    rows = predictions.list_for_model(
        get_session(), user_id=current_user().user_id, model_id=model_id
    )
    return dump_all(predictions.to_read(row) for row in rows)
