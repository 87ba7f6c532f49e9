"""Trained models: list (M1) and delete (M3). Training (M2) and the plots are not built yet."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from pydantic import RootModel
from spectree import Response as Resp

from shared.modeling import service
from shared.modeling.schemas import ModelRead
from webapp.auth import current_user
from webapp.db import get_session
from webapp.extensions import spec
from webapp.serialize import dump, dump_all

bp = Blueprint("models", __name__)
TAGS = ["models"]


class ModelList(RootModel[list[ModelRead]]):
    """The caller's models of an album."""


@bp.get("/models/<album_id>")
@spec.validate(resp=Resp(HTTP_200=ModelList), tags=TAGS)
def list_models(album_id: str) -> list[dict[str, Any]]:
    """Return the caller's models of an album (every extraction)."""
    session = get_session()
    models = service.list_for_album(session, user_id=current_user().user_id, album_id=album_id)
    return dump_all(service.to_read(session, models))


@bp.delete("/models/<int:model_id>")
@spec.validate(resp=Resp(HTTP_200=ModelRead, HTTP_404=None), tags=TAGS)
def delete_model(model_id: int) -> dict[str, Any]:
    """Delete a model and its saved pipeline; return it as it was."""
    session = get_session()
    model = service.get_owned(session, user_id=current_user().user_id, model_id=model_id)
    (body,) = service.to_read(session, [model])
    service.delete(session, model=model, data_dir=current_app.config["SETTINGS"].data_dir)
    session.commit()
    return dump(body)
