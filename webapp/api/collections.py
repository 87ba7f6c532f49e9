"""Feature collections (F1-F6)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from pydantic import RootModel
from spectree import Response as Resp

from shared.collections import service
from shared.collections.models import FeatureCollection
from shared.collections.schemas import (
    CollectionCreate,
    CollectionItem,
    CollectionRead,
    CollectionUpdate,
    CollectionWithValues,
)
from shared.extractions import service as extraction_service
from shared.features import service as feature_service
from webapp.auth import current_user
from webapp.db import get_session
from webapp.downloads import attachment
from webapp.extensions import spec
from webapp.serialize import dump, dump_all

bp = Blueprint("collections", __name__)
TAGS = ["collections"]


class CollectionList(RootModel[list[CollectionItem]]):
    """F2: the collections of an extraction."""


def _owned(collection_id: int) -> FeatureCollection:
    """Load the caller's collection (404 for anyone else's)."""
    return service.get_owned(
        get_session(), user_id=current_user().user_id, collection_id=collection_id
    )


@bp.post("/feature-collections/new")
@spec.validate(resp=Resp(HTTP_200=CollectionWithValues, HTTP_400=None, HTTP_404=None), tags=TAGS)
def create_collection(json: CollectionCreate) -> dict[str, Any]:
    """Save a named subset of an extraction's features (an identical one is returned as is)."""
    session = get_session()
    collection = service.create(session, user_id=current_user().user_id, body=json)
    session.commit()
    return dump(service.with_values(collection))


@bp.get("/feature-collections/extraction/<int:extraction_id>")
@spec.validate(resp=Resp(HTTP_200=CollectionList, HTTP_404=None), tags=TAGS)
def collections_of_extraction(extraction_id: int) -> list[dict[str, Any]]:
    """Return the caller's collections of an extraction."""
    collections = service.list_for_extraction(
        get_session(), user_id=current_user().user_id, extraction_id=extraction_id
    )
    return dump_all(
        CollectionItem(collection=CollectionRead.model_validate(c)) for c in collections
    )


@bp.get("/feature-collections/<int:collection_id>")
@spec.validate(resp=Resp(HTTP_200=CollectionWithValues, HTTP_404=None), tags=TAGS)
def get_collection(collection_id: int) -> dict[str, Any]:
    """Return one collection with its modalities, ROIs and feature names."""
    return dump(service.with_values(_owned(collection_id)))


@bp.patch("/feature-collections/<int:collection_id>")
@spec.validate(resp=Resp(HTTP_200=CollectionWithValues, HTTP_400=None, HTTP_404=None), tags=TAGS)
def update_collection(collection_id: int, json: CollectionUpdate) -> dict[str, Any]:
    """Rename a collection, change its features or its train/test split."""
    session = get_session()
    collection = service.update(session, collection=_owned(collection_id), changes=json)
    session.commit()
    return dump(service.with_values(collection))


@bp.delete("/feature-collections/<int:collection_id>")
@spec.validate(resp=Resp(HTTP_200=CollectionWithValues, HTTP_404=None), tags=TAGS)
def delete_collection(collection_id: int) -> dict[str, Any]:
    """Delete a collection; return it as it was."""
    session = get_session()
    collection = _owned(collection_id)
    body = dump(service.with_values(collection))
    service.delete(session, collection=collection)
    session.commit()
    return body


@bp.get("/feature-collections/<int:collection_id>/download")
@spec.validate(tags=TAGS)
def download_collection(collection_id: int) -> Response:
    """Download the collection's radiomics features as a ZIP of one CSV per modality and ROI."""
    session = get_session()
    collection = _owned(collection_id)
    extraction = extraction_service.get_owned(
        session, user_id=collection.user_id, extraction_id=collection.feature_extraction_id
    )
    body, filename = feature_service.features_zip(
        session,
        extraction=extraction,
        feature_ids=collection.feature_ids,
        collection_name=collection.name,
    )
    return attachment(body, filename, "application/zip")
