"""Feature collection rules: named subsets of one extraction's feature IDs."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.collections.models import FeatureCollection
from shared.collections.schemas import (
    CollectionCreate,
    CollectionRead,
    CollectionUpdate,
    CollectionWithValues,
)
from shared.db import owned
from shared.errors import InvalidInput
from shared.extractions import service as extraction_service
from shared.extractions.models import FeatureExtraction
from shared.features import storage
from shared.features.table import parse_feature_id

# Columns that always hold one of their values: a null in an update leaves them as they are.
_REQUIRED = ("name", "feature_ids", "data_splitting_type", "train_test_split_type")
_FIELDS = (*_REQUIRED, "training_patients", "test_patients")


def get_owned(session: so.Session, *, user_id: str, collection_id: int) -> FeatureCollection:
    """Return the caller's collection; another user's answers exactly like a missing one."""
    return owned.get_owned(
        session,
        FeatureCollection,
        collection_id,
        user_id=user_id,
        missing="Feature collection not found",
    )


def list_for_extraction(
    session: so.Session, *, user_id: str, extraction_id: int
) -> list[FeatureCollection]:
    """Return the caller's collections of one of their extractions, oldest first."""
    extraction_service.get_owned(session, user_id=user_id, extraction_id=extraction_id)
    return extraction_collections(session, extraction_id)


def create(session: so.Session, *, user_id: str, body: CollectionCreate) -> FeatureCollection:
    """Create a collection, or return the identical one that already exists."""
    extraction = extraction_service.get_owned(
        session, user_id=user_id, extraction_id=body.feature_extraction_id
    )
    _check_feature_ids(session, extraction, body.feature_ids)
    fields = {name: getattr(body, name) for name in _FIELDS}
    for existing in extraction_collections(session, extraction.id):
        if all(getattr(existing, name) == value for name, value in fields.items()):
            return existing
    collection = FeatureCollection(user_id=user_id, feature_extraction_id=extraction.id, **fields)
    session.add(collection)
    session.flush()
    return collection


def update(
    session: so.Session, *, collection: FeatureCollection, changes: CollectionUpdate
) -> FeatureCollection:
    """Apply the fields present in the request."""
    if changes.feature_ids is not None:
        extraction = session.get(FeatureExtraction, collection.feature_extraction_id)
        _check_feature_ids(session, extraction, changes.feature_ids)
    for name in changes.model_fields_set & set(_FIELDS):
        value = getattr(changes, name)
        if value is None and name in _REQUIRED:
            continue
        setattr(collection, name, value)
    session.flush()
    return collection


def delete(session: so.Session, *, collection: FeatureCollection) -> None:
    """Delete a collection (its models go with it)."""
    session.delete(collection)
    session.flush()


def with_values(collection: FeatureCollection) -> CollectionWithValues:
    """Describe a collection with the modalities, ROIs and feature names of its IDs."""
    modalities, rois, features = set(), set(), set()
    for fid in collection.feature_ids:
        parsed = parse_feature_id(fid)
        modality, roi, name = parsed if parsed is not None else ("", "", fid)  # clinical: bare
        modalities.add(modality)
        rois.add(roi)
        features.add(name)
    return CollectionWithValues(
        collection=CollectionRead.model_validate(collection),
        modalities=sorted(modalities),
        rois=sorted(rois),
        features=sorted(features),
    )


def extraction_collections(session: so.Session, extraction_id: int) -> list[FeatureCollection]:
    """Return every collection of an extraction, oldest first."""
    query = (
        sa.select(FeatureCollection)
        .where(FeatureCollection.feature_extraction_id == extraction_id)
        .order_by(FeatureCollection.id)
    )
    return list(session.scalars(query))


def _check_feature_ids(
    session: so.Session, extraction: FeatureExtraction | None, ids: list[str]
) -> None:
    """Refuse radiomics feature IDs the extraction has no values for (clinical IDs pass)."""
    radiomics = [fid for fid in ids if parse_feature_id(fid) is not None]
    if not radiomics or extraction is None:
        return
    unknown = sorted(set(radiomics) - storage.feature_ids(session, extraction_id=extraction.id))
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        shown = ", ".join(unknown[:3])
        raise InvalidInput(f"Extraction {extraction.id} has no feature {shown}{more}")
