"""Outcomes (label categories) and their labels (L1-L5)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from pydantic import RootModel
from spectree import Response as Resp

from shared.labels import service
from shared.labels.models import LabelCategory
from shared.labels.schemas import (
    LabelCategoryCreate,
    LabelCategoryRead,
    LabelCategoryRename,
    LabelRead,
    LabelsSave,
)
from webapp.auth import current_user
from webapp.db import get_session
from webapp.extensions import spec
from webapp.serialize import dump, dump_all

bp = Blueprint("labels", __name__)
TAGS = ["outcomes"]


class LabelCategoryList(RootModel[list[LabelCategoryRead]]):
    """The caller's outcomes of an album."""


class LabelList(RootModel[list[LabelRead]]):
    """Every label of an outcome."""


class PatientList(RootModel[list[str]]):
    """The PatientIDs labelled in an outcome."""


def _owned(category_id: int) -> LabelCategory:
    """Load the caller's outcome (404 for anyone else's)."""
    return service.get_owned(get_session(), user_id=current_user().user_id, category_id=category_id)


@bp.get("/label-categories/<album_id>")
@spec.validate(resp=Resp(HTTP_200=LabelCategoryList), tags=TAGS)
def list_categories(album_id: str) -> list[dict[str, Any]]:
    """Return the caller's outcomes of an album with their labels."""
    return service.read_for_album(get_session(), user_id=current_user().user_id, album_id=album_id)


@bp.post("/label-categories/<album_id>")
@spec.validate(resp=Resp(HTTP_200=LabelCategoryRead, HTTP_409=None), tags=TAGS)
def create_category(album_id: str, json: LabelCategoryCreate) -> dict[str, Any]:
    """Create an outcome; each patient of the first extraction gets an 'Undefined' label."""
    session = get_session()
    category = service.create(
        session,
        user_id=current_user().user_id,
        album_id=album_id,
        label_type=json.label_type,
        name=json.name,
    )
    session.commit()
    return dump(LabelCategoryRead.model_validate(category))


@bp.post("/labels/<int:category_id>")
@spec.validate(resp=Resp(HTTP_200=LabelList, HTTP_404=None), tags=TAGS)
def save_labels(category_id: int, json: LabelsSave) -> list[dict[str, Any]]:
    """Replace every label of an outcome (and set its positive label when given)."""
    session = get_session()
    labels = service.replace_labels(
        session, category=_owned(category_id), label_map=json.label_map, pos_label=json.pos_label
    )
    session.commit()
    return dump_all(LabelRead.model_validate(label) for label in labels)


@bp.patch("/labels/<int:category_id>")
@spec.validate(resp=Resp(HTTP_200=LabelCategoryRead, HTTP_404=None, HTTP_409=None), tags=TAGS)
def rename_category(category_id: int, json: LabelCategoryRename) -> dict[str, Any]:
    """Rename an outcome."""
    session = get_session()
    category = service.rename(session, category=_owned(category_id), name=json.name)
    session.commit()
    return dump(LabelCategoryRead.model_validate(category))


@bp.delete("/labels/<int:category_id>")
@spec.validate(resp=Resp(HTTP_200=LabelCategoryRead, HTTP_404=None), tags=TAGS)
def delete_category(category_id: int) -> dict[str, Any]:
    """Delete an outcome with its labels; return it as it was."""
    session = get_session()
    category = _owned(category_id)
    body = dump(LabelCategoryRead.model_validate(category))
    service.delete(session, category=category)
    session.commit()
    return body


@bp.get("/labels/patients_from_label_category/<int:category_id>")
@spec.validate(resp=Resp(HTTP_200=PatientList, HTTP_404=None), tags=TAGS)
def labelled_patients(category_id: int) -> list[str]:
    """Return the PatientIDs that have a label in the outcome."""
    return [label.patient_id for label in _owned(category_id).labels]
