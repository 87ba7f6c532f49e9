"""Socket.IO event names and publishing through the Redis message queue.

Events go to the room of the user who owns the work (`user:<sub>`), never to everybody. With the
opt-in legacy mode, they are also sent to the room of anonymous (old frontend) connections.
Workers publish without Flask, through python-socketio's write-only Redis manager.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import socketio

from shared.config import get_settings

log = logging.getLogger(__name__)

FEATURE_STATUS = "feature-status"
EXTRACTION_STATUS = "extraction-status"
TRAINING_STATUS = "training-status"
LEGACY_ROOM = "legacy:anonymous"

_manager: socketio.RedisManager | None = None
_lock = threading.Lock()


def user_room(user_id: str) -> str:
    """Return the private room of a user."""
    return f"user:{user_id}"


def _get_manager() -> socketio.RedisManager:
    """Create the write-only Redis manager once per process."""
    global _manager
    with _lock:
        if _manager is None:
            settings = get_settings()
            _manager = socketio.RedisManager(
                settings.socket_message_queue, channel=settings.socketio_channel, write_only=True
            )
        return _manager


def reset() -> None:
    """Forget the manager (after a fork, or when settings change in tests)."""
    global _manager
    with _lock:
        _manager = None


def publish(event: str, payload: dict[str, Any], *, user_id: str) -> None:
    """Send an event to the owner's room; a Redis outage is logged, never fatal to the work."""
    rooms = [user_room(user_id)]
    if get_settings().socketio_legacy_anonymous:
        rooms.append(LEGACY_ROOM)
    try:
        manager = _get_manager()
        for room in rooms:
            manager.emit(event, payload, room=room, namespace="/")
    except Exception as exc:  # events are notifications; the database row is the truth
        log.warning("could not publish %s: %s", event, exc)
