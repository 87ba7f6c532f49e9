"""Multi-step extraction work that spans the image source and the database."""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy.orm as so

from shared import lifecycle
from shared.config import Settings
from shared.db.base import utcnow
from shared.errors import InvalidInput
from shared.extractions import runs, service
from shared.extractions.models import FeatureExtraction, WorkerCredential
from shared.extractions.schemas import ExtractionCreate
from shared.imaging.factory import image_source
from shared.imaging.source import ImageSource
from shared.presets.config_schema import dump_yaml, validate_config

log = logging.getLogger(__name__)


def start(
    session: so.Session,
    *,
    settings: Settings,
    user_id: str,
    user_token: str | None,
    album_id: str,
    body: ExtractionCreate,
) -> FeatureExtraction:
    """Validate the request, list the album's studies and create the extraction rows.

    Nothing is queued here: the caller commits first, then calls `enqueue`, so a worker can
    never look for rows that are not committed yet.
    """
    validate_config(body.config)
    source = image_source(settings, credential=user_token)
    album = source.album(album_id)
    studies = source.list_studies(album_id)
    if not studies:
        raise InvalidInput(f"Album {album_id!r} has no studies to extract")
    credential_id = _worker_credential(session, source, settings, user_id, album_id)
    extraction = service.create(
        session,
        user_id=user_id,
        album_id=album_id,
        album_name=album.name,
        config_yaml=dump_yaml(body.config),
        rois=body.rois,
        studies=studies,
        credential_id=credential_id,
    )
    log.info("extraction %s: %d studies of album %s", extraction.id, len(studies), album_id)
    return extraction


def _worker_credential(
    session: so.Session, source: ImageSource, settings: Settings, user_id: str, album_id: str
) -> int | None:
    """Create and store the credential the workers will use (a read-only Kheops capability)."""
    create = getattr(source, "create_capability", None)
    if create is None:
        return None
    expires = utcnow() + dt.timedelta(seconds=settings.extraction_task_time_limit * 4)
    external_id, secret = create(album_id, f"quantimage-extraction-{album_id}", expires)
    credential = WorkerCredential(
        user_id=user_id,
        source=settings.image_source,
        album_id=album_id,
        external_id=external_id,
        secret=secret,
        expires_at=expires,
    )
    session.add(credential)
    session.flush()
    return credential.id


def enqueue(session: so.Session, *, extraction: FeatureExtraction) -> None:
    """Queue one task per study; if the broker is down, fail the studies and say so."""
    lifecycle.enqueue(session, runs.STUDY, extraction.tasks)
