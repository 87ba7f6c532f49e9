"""Socket.IO: clients authenticate on connect and join the private room of their `sub`."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, request
from flask_socketio import SocketIO, join_room

from shared import events
from shared.config import Settings
from shared.errors import Unauthorized

log = logging.getLogger(__name__)


def _token_from(auth: Any) -> str | None:
    """Read the token from the `auth` payload or the `token` query parameter."""
    if isinstance(auth, dict) and auth.get("token"):
        token = str(auth["token"])
    else:
        token = request.args.get("token")
    if token and token.lower().startswith("bearer "):
        token = token[7:]
    return token or None


def register(socketio: SocketIO, settings: Settings) -> None:
    """Install the connect/disconnect handlers."""

    @socketio.on("connect")
    def connect(auth: Any = None) -> bool:
        token = _token_from(auth)
        if token is None:
            if settings.socketio_legacy_anonymous:
                join_room(events.LEGACY_ROOM)
                log.info("anonymous socket %s joined the legacy room", request.sid)
                return True
            log.info("socket %s refused: no token", request.sid)
            return False
        try:
            principal = current_app.extensions["qi2_verifier"].verify(token)
        except Unauthorized as exc:
            log.info("socket %s refused: %s", request.sid, exc.message)
            return False
        join_room(events.user_room(principal.user_id))
        return True

    @socketio.on("disconnect")
    def disconnect(*_args: Any) -> None:
        log.debug("socket %s disconnected", request.sid)
