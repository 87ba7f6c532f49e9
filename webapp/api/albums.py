"""Albums: ROI names per album (A1, A2) and the caller's current outcome (A3, A4)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from pydantic import RootModel
from spectree import Response as Resp

from shared.albums import service as album_service
from shared.albums.schemas import AlbumOutcomeRead
from shared.imaging.factory import image_source
from shared.labels import service as label_service
from shared.labels.schemas import LabelCategoryRead
from webapp.auth import current_token, current_user
from webapp.db import get_session
from webapp.extensions import spec
from webapp.serialize import dump

bp = Blueprint("albums", __name__)
TAGS = ["albums"]


class AlbumRois(RootModel[dict[str, int]]):
    """ROI name -> number of studies of the album that contain it."""


class MaybeOutcome(RootModel[LabelCategoryRead | None]):
    """The caller's current outcome of the album, or null when none is selected."""


def _rois(album_id: str, *, force: bool) -> dict[str, int]:
    """Compute (or read the cached) ROI map with the caller's credentials."""
    session = get_session()
    source = image_source(current_app.config["SETTINGS"], credential=current_token())
    rois = album_service.album_rois(session, source=source, album_id=album_id, force=force)
    session.commit()
    return rois


@bp.get("/albums/<album_id>")
@spec.validate(resp=Resp(HTTP_200=AlbumRois), tags=TAGS)
def album_rois(album_id: str) -> dict[str, int]:
    """Return the album's ROI names with the number of studies holding each (cached)."""
    return _rois(album_id, force=False)


@bp.get("/albums/<album_id>/force")
@spec.validate(resp=Resp(HTTP_200=AlbumRois), tags=TAGS)
def album_rois_forced(album_id: str) -> dict[str, int]:
    """Recompute the album's ROI map from the image source."""
    return _rois(album_id, force=True)


@bp.get("/albums/<album_id>/current-outcome")
@spec.validate(resp=Resp(HTTP_200=MaybeOutcome), tags=TAGS, skip_validation=True)
def current_outcome(album_id: str) -> Response:
    """Return the outcome the caller selected for the album, or JSON null."""
    category = label_service.current(
        get_session(), user_id=current_user().user_id, album_id=album_id
    )
    if category is None:
        return jsonify(None)
    return jsonify(dump(LabelCategoryRead.model_validate(category)))


@bp.patch("/albums/<album_id>/current-outcome")
@bp.patch("/albums/<album_id>/current-outcome/<int:category_id>")
@spec.validate(resp=Resp(HTTP_200=AlbumOutcomeRead, HTTP_404=None), tags=TAGS)
def select_outcome(album_id: str, category_id: int | None = None) -> dict[str, Any]:
    """Select the caller's current outcome of the album (no id: clear it)."""
    session = get_session()
    row = label_service.select_current(
        session, user_id=current_user().user_id, album_id=album_id, category_id=category_id
    )
    session.commit()
    return dump(AlbumOutcomeRead.model_validate(row))
