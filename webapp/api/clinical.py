"""Clinical features (C1-C9): definitions and values per album, and table analyses."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from pydantic import RootModel
from spectree import Response as Resp

from shared.clinical import analysis, service
from shared.clinical.schemas import (
    ClinicalFeaturesPost,
    ColumnFlags,
    DefinitionRead,
    DefinitionsCreate,
    DefinitionsUpdate,
    SavedValue,
    TableBody,
    UniqueValuesBody,
)
from shared.errors import InvalidInput
from shared.schemas import AlbumIdText, Schema
from webapp.auth import current_user
from webapp.db import get_session
from webapp.extensions import spec
from webapp.serialize import dump_all

bp = Blueprint("clinical", __name__)
TAGS = ["clinical features"]


class AlbumQuery(Schema):
    """The album, always from the query string (the frontend's body copy is ignored)."""

    album_id: AlbumIdText | None = None

    def required(self) -> str:
        """Return the album id or refuse the request."""
        if not self.album_id:
            raise InvalidInput("The album_id query parameter is required")
        return self.album_id


class DefinitionList(RootModel[list[DefinitionRead]]):
    """Definitions."""


class Message(Schema):
    """A confirmation."""

    message: str


@bp.post("/clinical-features")
@spec.validate(tags=TAGS)
def clinical_features(query: AlbumQuery, json: ClinicalFeaturesPost) -> Any:
    """Save the table's values (body `clinical_feature_map`) or read values (`patient_ids`)."""
    session, user_id, album_id = get_session(), current_user().user_id, query.required()
    if json.patient_ids is not None:
        return service.read_values(
            session, user_id=user_id, album_id=album_id, patient_ids=json.patient_ids
        )
    file = service.resolve_file(
        session, user_id=user_id, album_id=album_id, file_id=json.clinical_feature_file_id
    )
    rows = service.save_values(session, file=file, table=json.clinical_feature_map or {})
    session.commit()
    return dump_all(SavedValue.model_validate(row) for row in rows)


@bp.post("/clinical-features/filter")
@spec.validate(resp=Resp(HTTP_200=ColumnFlags), tags=TAGS)
def filter_columns(json: TableBody) -> dict[str, list[str]]:
    """Flag columns with one value, no values, too little data, or dates."""
    return analysis.filter_columns(json.clinical_feature_map)


@bp.post("/clinical-features/unique-values")
@spec.validate(tags=TAGS)
def unique_values(json: UniqueValuesBody) -> dict[str, list[str]]:
    """Summarise each defined column: category shares or numeric range."""
    types = {
        name: str(definition.get("feat_type"))
        for name, definition in json.clinical_features_definitions.items()
    }
    return analysis.unique_values(json.clinical_feature_map, types)


@bp.post("/clinical-features-definitions/guess")
@spec.validate(tags=TAGS)
def guess_definitions(json: TableBody) -> dict[str, dict[str, str]]:
    """Guess each column's type, encoding and missing-value policy."""
    return analysis.guess_definitions(json.clinical_feature_map)


@bp.get("/clinical-features-definitions")
@spec.validate(resp=Resp(HTTP_200=DefinitionList), tags=TAGS)
def list_definitions(query: AlbumQuery) -> list[dict[str, Any]]:
    """Return the caller's definitions of the album."""
    definitions = service.list_definitions(
        get_session(), user_id=current_user().user_id, album_id=query.required()
    )
    return dump_all(DefinitionRead.model_validate(d) for d in definitions)


@bp.post("/clinical-features-definitions")
@spec.validate(resp=Resp(HTTP_200=DefinitionList, HTTP_404=None), tags=TAGS)
def save_definitions(query: AlbumQuery, json: DefinitionsCreate) -> list[dict[str, Any]]:
    """Create or update definitions by name (in the named file, else the default file)."""
    session = get_session()
    file = service.resolve_file(
        session,
        user_id=current_user().user_id,
        album_id=query.required(),
        file_id=json.clinical_feature_file_id,
    )
    saved = service.save_definitions(session, file=file, specs=json.clinical_feature_definitions)
    session.commit()
    return dump_all(DefinitionRead.model_validate(d) for d in saved)


@bp.patch("/clinical-features-definitions")
@spec.validate(resp=Resp(HTTP_200=DefinitionList, HTTP_404=None), tags=TAGS)
def update_definitions(query: AlbumQuery, json: DefinitionsUpdate) -> list[dict[str, Any]]:
    """Apply edited definitions (by id, or by name within the album)."""
    session = get_session()
    updated = service.update_definitions(
        session,
        user_id=current_user().user_id,
        album_id=query.album_id or "",
        edits=json.clinical_feature_definitions,
    )
    session.commit()
    return dump_all(DefinitionRead.model_validate(d) for d in updated)


@bp.delete("/clinical-features-definitions")
@spec.validate(resp=Resp(HTTP_200=Message), tags=TAGS)
def delete_definitions(query: AlbumQuery) -> dict[str, str]:
    """Delete all the caller's definitions of the album, with their values."""
    session = get_session()
    service.delete_definitions(session, user_id=current_user().user_id, album_id=query.required())
    session.commit()
    return {"message": "feature definitions deleted successfully"}
