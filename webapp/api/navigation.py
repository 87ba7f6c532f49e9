"""Navigation history (N1)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from spectree import Response

from shared.navigation import service as navigation_service
from shared.navigation.schemas import NavigationCreate, NavigationRead
from webapp.auth import current_user
from webapp.db import get_session
from webapp.extensions import spec
from webapp.serialize import dump

bp = Blueprint("navigation", __name__)


@bp.post("/navigation")
@spec.validate(resp=Response(HTTP_200=NavigationRead), tags=["navigation"])
def record(json: NavigationCreate) -> dict[str, Any]:
    """Record a frontend route the user visited."""
    session = get_session()
    entry = navigation_service.record_visit(session, user_id=current_user().user_id, path=json.path)
    session.commit()
    return dump(NavigationRead.model_validate(entry))
