"""Albums: ROI names per album (A1, A2)."""

from __future__ import annotations

from flask import Blueprint, current_app
from pydantic import RootModel
from spectree import Response as Resp

from shared.albums import service as album_service
from shared.imaging.factory import image_source
from webapp.auth import current_token
from webapp.db import get_session
from webapp.extensions import spec

bp = Blueprint("albums", __name__)
TAGS = ["albums"]


class AlbumRois(RootModel[dict[str, int]]):
    """ROI name -> number of studies of the album that contain it."""


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
