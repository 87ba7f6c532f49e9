"""Socket.IO event names and publishing through the Redis message queue.

Events go to the room of the user who owns the work (`user:<sub>`), never to everybody. With the
opt-in legacy mode, they are also sent to the room of anonymous (old frontend) connections.
Workers publish without Flask, through python-socketio's write-only Redis manager.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import redis
import socketio

from shared import runtime
from shared.config import Settings

log = logging.getLogger(__name__)

FEATURE_STATUS = "feature-status"
EXTRACTION_STATUS = "extraction-status"
TRAINING_STATUS = "training-status"
PREDICTION_STATUS = "prediction-status"
LEGACY_ROOM = "legacy:anonymous"

# After a Redis restart, wait this long for the listening side (the Socket.IO service,
# webapp/socket_service.py) to subscribe again.
LISTENER_WAIT_SECONDS = 5.0
RESUBSCRIBE_FIRST_DELAY = 0.2
RESUBSCRIBE_MAX_DELAY = 1.0


class ResubscribingRedisManager(socketio.AsyncRedisManager):
    """The listening side's Redis manager, subscribing again within a second of Redis's return.

    python-socketio backs off up to 60 s between attempts; Redis pub/sub keeps nothing for
    absent subscribers, so every event published in that gap would be lost.
    """

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        """Yield pub/sub messages; on any error, reconnect and subscribe again promptly."""
        delay = RESUBSCRIBE_FIRST_DELAY
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                delay = RESUBSCRIBE_FIRST_DELAY
                async for message in self.pubsub.listen():
                    yield message
            except Exception as exc:  # Redis away: keep trying, never give up
                log.warning("Socket.IO queue: Redis unavailable (%s); retrying", exc)
                await self._close_pubsub()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_MAX_DELAY)

    async def _close_pubsub(self) -> None:
        """Drop the broken subscription's connection before opening a new one."""
        try:
            if self.pubsub is not None:
                await self.pubsub.aclose()
        except Exception as exc:  # already broken; nothing more to release
            log.debug("closing the old subscription failed: %s", exc)


def listening_manager(url: str, channel: str) -> ResubscribingRedisManager:
    """Return the Redis manager of the process that serves Socket.IO clients."""
    return ResubscribingRedisManager(url, channel=channel)


def user_room(user_id: str) -> str:
    """Return the private room of a user."""
    return f"user:{user_id}"


class Publisher:
    """The write-only side of one settings object's Socket.IO queue, built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._manager: socketio.RedisManager | None = None
        self._probe: redis.Redis | None = None
        self._listener_seen = False
        self._lock = threading.Lock()

    def _get_manager(self) -> socketio.RedisManager:
        """Create the write-only Redis manager once."""
        with self._lock:
            if self._manager is None:
                self._manager = socketio.RedisManager(
                    self.settings.socket_message_queue,
                    channel=self.settings.socketio_channel,
                    write_only=True,
                )
            return self._manager

    def reset(self) -> None:
        """Forget the manager and probe (after a fork: the child opens its own)."""
        with self._lock:
            self._manager = None
            self._probe = None
            self._listener_seen = False

    def _listeners(self, channel: str) -> int | None:
        """Count the processes subscribed to the channel; None when Redis does not answer."""
        try:
            if self._probe is None:
                self._probe = redis.Redis.from_url(self.settings.socket_message_queue)
            return int(self._probe.pubsub_numsub(channel)[0][1])
        except redis.RedisError:
            return None

    def _await_listener(self, channel: str) -> None:
        """Wait a little when a listener was seen before and is gone (Redis just restarted).

        An event published before the Socket.IO service subscribes again would reach nobody.
        Only the first event after a listener vanished waits; if none comes back, later events
        go out at once.
        """
        deadline = time.monotonic() + LISTENER_WAIT_SECONDS
        while True:
            count = self._listeners(channel)
            if count:
                self._listener_seen = True
                return
            if not self._listener_seen:
                return
            if time.monotonic() > deadline:
                self._listener_seen = False
                return
            time.sleep(0.1)

    def publish(self, event: str, payload: dict[str, Any], *, user_id: str) -> None:
        """Send an event to the owner's room; a Redis outage is logged, never fatal."""
        rooms = [user_room(user_id)]
        if self.settings.socketio_legacy_anonymous:
            rooms.append(LEGACY_ROOM)
        self._await_listener(self.settings.socketio_channel)
        try:
            manager = self._get_manager()
            for room in rooms:
                manager.emit(event, payload, room=room, namespace="/")
        except Exception as exc:  # events are notifications; the database row is the truth
            log.warning("could not publish %s: %s", event, exc)


def publish(event: str, payload: dict[str, Any], *, user_id: str) -> None:
    """Send an event through the publisher of the current app or worker."""
    runtime.current().publisher.publish(event, payload, user_id=user_id)
