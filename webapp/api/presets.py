"""Feature presets (P1-P4). Reads for every user, writes for the admin role."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from spectree import Response

from shared.errors import InvalidInput
from shared.presets import service as preset_service
from shared.presets.schemas import PresetDeleted, PresetForm, PresetRead
from webapp.auth import require_role
from webapp.db import get_session
from webapp.extensions import spec
from webapp.serialize import dump, dump_all

bp = Blueprint("presets", __name__)
YAML_PART_TYPES = {
    "application/x-yaml",
    "application/octet-stream",
    "application/yaml",
    "text/yaml",
}


@bp.get("/feature-presets")
@spec.validate(resp=Response(HTTP_200=list[PresetRead]), tags=["presets"])
def list_presets() -> list[dict[str, Any]]:
    """List every preset."""
    presets = preset_service.list_presets(get_session())
    return dump_all(PresetRead.from_row(p) for p in presets)


@bp.get("/feature-presets/<int:preset_id>")
@spec.validate(resp=Response(HTTP_200=PresetRead, HTTP_404=None), tags=["presets"])
def get_preset(preset_id: int) -> dict[str, Any]:
    """Return one preset."""
    return dump(PresetRead.from_row(preset_service.get_preset(get_session(), preset_id=preset_id)))


@bp.post("/feature-presets")
@require_role()
@spec.validate(resp=Response(HTTP_200=PresetRead, HTTP_400=None, HTTP_403=None), tags=["presets"])
def create_preset(form: PresetForm) -> dict[str, Any]:
    """Create a preset from a multipart `name` + YAML `file` (admin only)."""
    file_name, text = _uploaded_yaml(required=True)
    session = get_session()
    preset = preset_service.create_preset(
        session, name=form.name, file_name=file_name, yaml_text=text
    )
    body = dump(PresetRead.from_row(preset))  # serialise before the commit: a bad row never lands
    session.commit()
    return body


@bp.patch("/feature-presets/<int:preset_id>")
@require_role()
@spec.validate(resp=Response(HTTP_200=PresetRead, HTTP_400=None, HTTP_403=None), tags=["presets"])
def update_preset(preset_id: int, form: PresetForm) -> dict[str, Any]:
    """Rename a preset and optionally replace its YAML `file` (admin only)."""
    file_name, text = _uploaded_yaml(required=False)
    session = get_session()
    preset = preset_service.update_preset(
        session, preset_id=preset_id, name=form.name, file_name=file_name, yaml_text=text
    )
    body = dump(PresetRead.from_row(preset))  # serialise before the commit: a bad row never lands
    session.commit()
    return body


@bp.delete("/feature-presets/<int:preset_id>")
@require_role()
@spec.validate(
    resp=Response(HTTP_200=PresetDeleted, HTTP_403=None, HTTP_404=None), tags=["presets"]
)
def delete_preset(preset_id: int) -> dict[str, Any]:
    """Delete a preset (admin only); extractions made with it keep their stored configuration."""
    session = get_session()
    preset_service.delete_preset(session, preset_id=preset_id)
    session.commit()
    return dump(PresetDeleted(id=preset_id))


def _uploaded_yaml(*, required: bool) -> tuple[str | None, str | None]:
    """Read the `file` part: a YAML document with a YAML or octet-stream content type."""
    upload = request.files.get("file")
    if upload is None:
        if required:
            raise InvalidInput("file: a YAML file part is required")
        return None, None
    if upload.mimetype not in YAML_PART_TYPES:
        raise InvalidInput(
            f"file: content type {upload.mimetype!r} is not accepted; send application/x-yaml"
        )
    try:
        text = upload.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("file: the preset must be UTF-8 text") from exc
    return preset_service.safe_file_name(upload.filename, "preset.yaml"), text
