"""Extractions (E1-E4, E8, E9) and their downloads (E5-E7)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from pydantic import RootModel
from spectree import Response as Resp

from shared import jobs
from shared.extractions import flows, service
from shared.extractions.schemas import (
    CancelResult,
    ExtractionCreate,
    ExtractionRead,
    ExtractionStatus,
    ExtractionUpdate,
)
from shared.features import service as feature_service
from webapp.auth import current_token, current_user
from webapp.db import get_session
from webapp.downloads import RANKING_HEADER, attachment
from webapp.extensions import spec
from webapp.serialize import dump

log = logging.getLogger(__name__)
bp = Blueprint("extractions", __name__)
TAGS = ["extractions"]


class MaybeExtraction(RootModel[ExtractionRead | None]):
    """The latest extraction of an album, or null when the caller has none."""


def _owned(extraction_id: int):
    """Load the caller's extraction (404 for anyone else's)."""
    return service.get_owned(
        get_session(), user_id=current_user().user_id, extraction_id=extraction_id
    )


@bp.get("/extractions/album/<album_id>")
@spec.validate(resp=Resp(HTTP_200=MaybeExtraction), tags=TAGS, skip_validation=True)
def latest_for_album(album_id: str) -> Response:
    """Return the caller's latest extraction of an album (raw tasks), or JSON null."""
    session = get_session()
    extraction = service.latest_for_album(
        session, user_id=current_user().user_id, album_id=album_id
    )
    if extraction is None:
        return jsonify(None)
    return jsonify(service.to_raw_json(session, extraction))


@bp.get("/extractions/<int:extraction_id>")
@spec.validate(resp=Resp(HTTP_200=ExtractionRead, HTTP_404=None), tags=TAGS)
def get_extraction(extraction_id: int) -> dict[str, Any]:
    """Return one extraction with formatted tasks."""
    extraction = _owned(extraction_id)
    return dump(service.to_read(get_session(), extraction, formatted_tasks=True))


@bp.patch("/extractions/<int:extraction_id>")
@spec.validate(resp=Resp(HTTP_200=ExtractionRead, HTTP_404=None), tags=TAGS)
def update_extraction(extraction_id: int, json: ExtractionUpdate) -> dict[str, Any]:
    """Update the extraction's train/test split fields."""
    session = get_session()
    extraction = service.update_split(session, extraction=_owned(extraction_id), changes=json)
    session.commit()
    return dump(service.to_read(session, extraction, formatted_tasks=True))


@bp.get("/extractions/<int:extraction_id>/status")
@spec.validate(resp=Resp(HTTP_200=ExtractionStatus, HTTP_404=None), tags=TAGS)
def extraction_status(extraction_id: int) -> dict[str, Any]:
    """Return the progress counters (from MySQL alone; works with Redis down)."""
    return dump(service.compute_status(_owned(extraction_id)))


@bp.post("/extractions/<int:extraction_id>/cancel")
@spec.validate(resp=Resp(HTTP_200=CancelResult, HTTP_404=None, HTTP_409=None), tags=TAGS)
def cancel_extraction(extraction_id: int) -> dict[str, Any]:
    """Stop a running extraction and delete it with its tasks and values."""
    session = get_session()
    extraction = _owned(extraction_id)
    previous = service.previous_for_album(session, extraction=extraction)
    task_ids = service.cancel(session, extraction=extraction)
    session.commit()
    _revoke(task_ids)
    return dump(
        CancelResult(
            cancelled=True,
            message=f"Feature extraction {extraction_id} cancelled",
            previous_extraction=(
                service.to_read(session, previous, formatted_tasks=True) if previous else None
            ),
        )
    )


def _revoke(task_ids: list[str]) -> None:
    """Revoke queued and running tasks; workers also stop when they see the rows gone."""
    if not task_ids:
        return
    try:
        jobs.revoke(task_ids)
    except Exception as exc:  # the rows are gone already; workers will skip the tasks
        log.warning("revoking %d tasks failed: %s", len(task_ids), exc)


@bp.post("/extract/album/<album_id>")
@spec.validate(resp=Resp(HTTP_200=ExtractionRead, HTTP_400=None, HTTP_503=None), tags=TAGS)
def start_extraction(album_id: str, json: ExtractionCreate) -> dict[str, Any]:
    """Start extracting the album's studies: one task per study on the extraction queue."""
    session = get_session()
    extraction = flows.start(
        session,
        settings=current_app.config["SETTINGS"],
        user_id=current_user().user_id,
        user_token=current_token(),
        album_id=album_id,
        body=json,
    )
    session.commit()
    flows.enqueue(session, extraction=extraction)
    return dump(service.to_read(session, extraction, formatted_tasks=False))


@bp.get("/extractions/<int:extraction_id>/download-configuration")
@spec.validate(tags=TAGS)
def download_configuration(extraction_id: int) -> Response:
    """Download the extraction's configuration as YAML."""
    extraction = _owned(extraction_id)
    return attachment(
        extraction.config_yaml.encode(), f"extraction-{extraction.id}-config.yaml", "text/yaml"
    )


@bp.get("/extractions/<int:extraction_id>/feature-details")
@spec.validate(tags=TAGS)
def feature_details(extraction_id: int) -> Response:
    """Return the feature table and the z-scored chart table as a multipart body."""
    extraction = _owned(extraction_id)
    details = feature_service.feature_details(get_session(), extraction=extraction)
    response = Response(details.body, content_type=details.content_type)
    response.headers[RANKING_HEADER] = details.ranking_note  # the frontend ignores it
    return response


@bp.get("/extractions/<int:extraction_id>/download")
@spec.validate(tags=TAGS)
def download_features(extraction_id: int) -> Response:
    """Download the features as a ZIP of one CSV per modality and ROI."""
    extraction = _owned(extraction_id)
    body, filename = feature_service.features_zip(get_session(), extraction=extraction)
    return attachment(body, filename, "application/zip")
